//! `bapo train` killed with SIGKILL in the middle of a run and resumed with `--resume` logs
//! the same loss curve as an uninterrupted run; `bapo anchors` reuses its cache and `--force`
//! recomputes it; `bapo eval` evaluates a checkpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    bapo_testkit::workspace_root()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bapo <command> --config configs/tiny.toml` with absolute fixture paths, run and anchors
/// under `dir`, and `sets`.
fn bapo(command: &str, dir: &Path, sets: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bapo"));
    cmd.arg(command)
        .arg("--config")
        .arg(root().join("configs/tiny.toml"));
    let overrides = bapo_testkit::tiny_run_overrides(dir);
    for set in overrides
        .iter()
        .map(String::as_str)
        .chain(sets.iter().copied())
    {
        cmd.arg("--set").arg(set);
    }
    cmd
}

/// (step, loss) of every line of a run's metrics.jsonl.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// The lines of a killed run's metrics.jsonl: every whole line, and none of the last when the
/// kill cut it in half (`--resume` drops such a line; the test once read one and failed).
fn lines_of_killed_run(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = lines
        .last()
        .is_some_and(|l| serde_json::from_str::<serde_json::Value>(l).is_err());
    for line in &lines[..lines.len() - usize::from(torn)] {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole line parses");
    }
    lines.len() - usize::from(torn)
}

const LONG_RUN: [&str; 4] = [
    "training.max_steps=1500",
    "checkpoint.interval=50",
    "training.logging_steps=1",
    "eval.at_start=false",
];

#[test]
fn a_killed_run_resumes_with_the_same_loss_curve() {
    killed_and_resumed("full", &LONG_RUN);
}

#[test]
fn a_killed_lora_run_resumes_with_the_same_loss_curve() {
    let mut sets = LONG_RUN.to_vec();
    sets.push("lora.enabled=true");
    sets.push("lora.rank=2");
    killed_and_resumed("lora", &sets);
}

fn killed_and_resumed(tag: &str, sets: &[&str]) {
    let whole = scratch(&format!("{tag}-whole"));
    let status = bapo("train", &whole, sets).arg("--quiet").status().unwrap();
    assert!(status.success());
    let expected = losses(&whole);
    assert_eq!(expected.len(), 1500);

    // Kill at an arbitrary point after the first checkpoint.
    let killed = scratch(&format!("{tag}-killed"));
    let mut child = bapo("train", &killed, sets)
        .arg("--quiet")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let first_checkpoint = killed.join("run/checkpoints/step-000100");
    let started = Instant::now();
    while !first_checkpoint.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was killed before it finished");
    let partial = lines_of_killed_run(&killed);
    assert!(partial < 1500, "killed mid-run ({partial} steps logged)");

    // Without --resume the run directory is left alone.
    let output = bapo("train", &killed, sets).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--resume"));

    let status = bapo("train", &killed, sets)
        .args(["--resume", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    let resumed = losses(&killed);
    assert_eq!(
        resumed.len(),
        expected.len(),
        "one line per step, none doubled"
    );
    for ((step_a, a), (step_b, b)) in expected.iter().zip(&resumed) {
        assert_eq!(step_a, step_b);
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            "step {step_a}: {a} vs {b}"
        );
    }

    // A resume with another config is refused.
    let output = bapo("train", &killed, sets)
        .args(["--resume", "--set", "optimizer.learning_rate=0.5"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("another config"));

    // TensorBoard files: one per process that trained the run, none from a refused start.
    let event_files = |dir: &Path| {
        std::fs::read_dir(dir.join("run/tensorboard"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    assert_eq!(event_files(&whole), 1);
    assert_eq!(event_files(&killed), 2);
}

#[test]
fn anchors_are_cached_and_forced_and_eval_reads_a_checkpoint() {
    let dir = scratch("anchors");
    let run = |extra: &[&str]| {
        let output = bapo("anchors", &dir, &[]).args(extra).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let first = run(&[]);
    assert!(first.contains("0 chunks reused"), "{first}");
    let second = run(&[]);
    assert!(second.contains("0 computed"), "{second}");
    let forced = run(&["--force"]);
    assert!(forced.contains("0 chunks reused"), "{forced}");

    let sets = [
        "training.max_steps=4",
        "checkpoint.interval=2",
        "checkpoint.keep=3",
    ];
    let status = bapo("train", &dir, &sets).arg("--quiet").status().unwrap();
    assert!(status.success());

    // `eval --write` puts a checkpoint's evaluation into the run's logs at its step, in step
    // order, in place of one of the same step.
    let steps = |log: &str| -> Vec<u64> {
        std::fs::read_to_string(dir.join("run").join(log))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(steps("eval.jsonl"), [0, 4]);
    let middle = dir.join("run/checkpoints/step-000002");
    for _ in 0..2 {
        let output = bapo("eval", &dir, &sets)
            .arg("--checkpoint")
            .arg(&middle)
            .arg("--write")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(steps("eval.jsonl"), [0, 2, 4]);
        assert_eq!(steps("eval_items.jsonl"), [0, 2, 4]);
    }

    // Another run's checkpoint (another seed) is not written into this run's logs: it would
    // replace this run's row of its step (issue #26). Read-only, it can be evaluated.
    let other = scratch("anchors-other");
    let other_sets = [&sets[..], &["training.seed=7"]].concat();
    let status = bapo("train", &other, &other_sets)
        .arg("--quiet")
        .status()
        .unwrap();
    assert!(status.success());
    let stranger = other.join("run/checkpoints/step-000002");
    let before = std::fs::read_to_string(dir.join("run/eval.jsonl")).unwrap();
    let output = bapo("eval", &dir, &sets)
        .arg("--checkpoint")
        .arg(&stranger)
        .arg("--write")
        .output()
        .unwrap();
    let refused = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && refused.contains("written with another config"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("run/eval.jsonl")).unwrap(),
        before
    );
    let output = bapo("eval", &dir, &sets)
        .arg("--checkpoint")
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = bapo("eval", &dir, &sets).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("step-000004") && report.contains("pref/truthful/margin"),
        "{report}"
    );
}

/// Sizes far past what the model or the data can take are refused by key with the bound that
/// applies, with an error and exit status 1, not an abort on a failed allocation (issue #26:
/// each of these aborted the process with SIGABRT).
#[test]
fn absurd_sizes_are_refused_by_key() {
    for (sets, key, bound) in [
        (
            &["lora.enabled=true", "lora.rank=1000000000"][..],
            "`lora.rank` = 1000000000",
            "the model's width",
        ),
        (
            &["anchors.num_anchors=1000000000"][..],
            "anchors.num_anchors",
            "more than 64 base responses",
        ),
        (
            &["objective.num_anchors=1000000000"][..],
            "1000000000 base responses per prompt",
            "more than 64",
        ),
        (
            &["training.batch_size=100000000"][..],
            "`training.batch_size` = 100000000",
            "training examples",
        ),
        (
            &["training.gradient_accumulation_steps=1000000000"][..],
            "`training.gradient_accumulation_steps` = 1000000000",
            "training examples",
        ),
    ] {
        let dir = scratch("absurd");
        let output = bapo("train", &dir, sets).arg("--quiet").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{sets:?}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(bound),
            "{sets:?}: {stderr}"
        );
    }
}

/// Messages in a config's words, each said once; what is odd but allowed is warned about,
/// even with `--quiet`; the built-in knowledge probe travels with the binary (issue #26).
#[test]
fn messages_are_plain_and_said_once_and_odd_settings_are_warned_about() {
    let run = |tag: &str, sets: &[&str]| {
        let dir = scratch(tag);
        // Outside the project: the probe's default path is not there.
        let output = bapo("train", &dir, sets)
            .arg("--quiet")
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.success(), stderr, dir)
    };
    for (sets, key, said) in [
        (
            &["training.batch_size=-1"][..],
            "training.batch_size",
            "whole number",
        ),
        (
            &["objective.num_anchors=-1"][..],
            "objective.num_anchors",
            "whole number",
        ),
        (
            &["objective.beta=-1"][..],
            "`objective.beta` = -1",
            "out of range",
        ),
        (
            &[
                "eval.knowledge_probe=\"no-such-probe.jsonl\"",
                "eval.country_facts=4",
            ][..],
            "`eval.knowledge_probe`",
            "no-such-probe.jsonl",
        ),
    ] {
        let (ok, stderr, _) = run("plain", sets);
        assert!(
            !ok && stderr.contains(key) && stderr.contains(said),
            "{sets:?}: {stderr}"
        );
        assert!(!stderr.contains("usize"), "{sets:?}: {stderr}");
        assert_eq!(stderr.matches(key).count(), 1, "said once: {stderr}");
    }

    // Every cause said once, in this order, and the whole config (the objective's table
    // included) checked before the run's directory is made: nothing is left behind.
    for (set, message) in [
        (
            "objective.beta=-1",
            "`objective.beta` = -1 is out of range: expected a finite number > 0",
        ),
        (
            "objective.gamma=-1",
            "unknown key `objective.gamma`; known keys: beta, lambda, form, kappa, normalize, num_anchors",
        ),
    ] {
        let (ok, stderr, dir) = run("refused", &[set]);
        assert!(!ok);
        assert_eq!(
            stderr,
            format!(
                "error: training with {}: objective `bapo`: {message}\n",
                root().join("configs/tiny.toml").display()
            )
        );
        assert!(
            !dir.join("run").exists(),
            "{set}: the run's directory was made"
        );
    }

    let (ok, stderr, _) = run(
        "warned",
        &[
            "data.test_fraction=0",
            "schedule.warmup_steps=100",
            "training.max_steps=2",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("warning: no pair is held out (`data.test_fraction` = 0")
            && stderr.contains("warning: `schedule.warmup_steps` = 100"),
        "{stderr}"
    );

    let (ok, stderr, dir) = run(
        "probe",
        &[
            "eval.knowledge_probe=\"data/personalised/knowledge.jsonl\"",
            "eval.country_facts=4",
            "training.max_steps=1",
        ],
    );
    assert!(ok, "{stderr}");
    let eval = std::fs::read_to_string(dir.join("run/eval.jsonl")).unwrap();
    assert!(eval.contains("knowledge/country_facts"), "{eval}");
}

/// A Hugging Face dataset by id (`data.path = "owner/name"`): the Parquet files of its split
/// (`data.split`), here from a hand-made hub cache, offline, as `datasets` wrote them from the
/// tiny JSONL, train to the same losses as that JSONL; a split with no files is refused,
/// naming it.
#[test]
fn a_hub_dataset_by_id_trains_as_the_jsonl_it_was_made_from() {
    let dir = scratch("hub-data");
    let cache = dir.join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("datasets--bapo-test--tiny-prefs");
    let data = repo.join("snapshots").join(commit).join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let fixtures = root().join("tests/fixtures/parquet");
    std::fs::copy(
        fixtures.join("conversational.parquet"),
        data.join("train-00000-of-00001.parquet"),
    )
    .unwrap();
    // Another split, which must not be read with the training one.
    std::fs::copy(
        fixtures.join("wrong-type.parquet"),
        data.join("test-00000-of-00001.parquet"),
    )
    .unwrap();

    let from_jsonl = scratch("hub-data-jsonl");
    let output = bapo("train", &from_jsonl, &[])
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let by_id = |sets: &[&str]| {
        let mut all = vec!["data.path=\"bapo-test/tiny-prefs\""];
        all.extend_from_slice(sets);
        bapo("train", &dir, &all)
            .arg("--quiet")
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let output = by_id(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(losses(&dir), losses(&from_jsonl));

    let missing = scratch("hub-data-split");
    let output = bapo(
        "train",
        &missing,
        &[
            "data.path=\"bapo-test/tiny-prefs\"",
            "data.split=\"validation\"",
        ],
    )
    .arg("--quiet")
    .env("HF_HUB_CACHE", &cache)
    .env("HF_HUB_OFFLINE", "1")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("bapo-test/tiny-prefs")
            && stderr.contains("split `validation`")
            && stderr.contains("HF_HUB_OFFLINE"),
        "{stderr}"
    );
}
