//! The run directory's lifecycle with the real `bapo`: one run per directory at a time; a run
//! killed after its last checkpoint is finished by `--resume`; `--resume` without a checkpoint
//! or without a run says what it does and keeps the logs single; a moved run resumes; a
//! changed config is refused naming the keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-rundir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `bapo train` on configs/tiny.toml with its run and anchors under `dir`, 8 steps,
/// checkpoints every 4.
fn train(dir: &Path, extra: &[&str]) -> Command {
    let root = bapo_testkit::workspace_root();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bapo"));
    cmd.arg("train")
        .arg("--config")
        .arg(root.join("configs/tiny.toml"));
    let mut sets = bapo_testkit::tiny_run_overrides(dir);
    sets.push("training.max_steps=8".into());
    sets.push("checkpoint.interval=4".into());
    for set in &sets {
        cmd.arg("--set").arg(set);
    }
    cmd.args(extra);
    cmd
}

fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn failed(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "expected a refusal:\n{stderr}");
    stderr
}

/// A copy of the tiny model in `dir/model` (so that a test can change it), and the override
/// that trains it.
fn tiny_model_copy(dir: &Path) -> (PathBuf, String) {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let fixture = bapo_testkit::workspace_root().join("tests/fixtures/tiny-chat");
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let model_set = format!("model.path={:?}", model.display().to_string());
    (model, model_set)
}

/// The `step` of every line of a run log.
fn steps(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Keeps the lines of a log up to `step`, as a run killed there would have left it.
fn truncate_log(path: &Path, step: u64) {
    let kept: String = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
                <= step
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).unwrap();
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_while_the_first_runs() {
    let dir = scratch("lock");
    let mut first = train(&dir, &["--quiet", "--set", "training.max_steps=3000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let metrics = dir.join("run/metrics.jsonl");
    let started = Instant::now();
    while !metrics.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for extra in [&["--quiet"][..], &["--quiet", "--resume"][..]] {
        let second = failed(train(&dir, extra).output().unwrap());
        assert!(
            second.contains("in use by another bapo run")
                && second.contains(&format!("pid {}", first.id())),
            "{second}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn resume_finishes_a_run_killed_after_its_last_checkpoint() {
    let dir = scratch("end-phase");
    let run = dir.join("run");
    ok(train(&dir, &["--quiet"]).output().unwrap());
    assert!(run.join("finished.json").exists());
    let expected = std::fs::read_to_string(run.join("eval_items.jsonl")).unwrap();

    // Killed after the final checkpoint, before the final evaluation was written.
    for file in ["finished.json", "summary.md"] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
    truncate_log(&run.join("eval.jsonl"), 0);
    truncate_log(&run.join("eval_items.jsonl"), 0);
    let resumed = ok(train(&dir, &["--resume"]).output().unwrap());
    assert!(resumed.contains("finishing the end phase"), "{resumed}");
    assert!(run.join("summary.md").exists() && run.join("finished.json").exists());
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);
    assert_eq!(
        std::fs::read_to_string(run.join("eval_items.jsonl")).unwrap(),
        expected
    );

    // Killed after the final evaluation was written: redone once, not doubled.
    std::fs::remove_file(run.join("finished.json")).unwrap();
    ok(train(&dir, &["--resume", "--quiet"]).output().unwrap());
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);

    // Finished: nothing to resume.
    let again = failed(train(&dir, &["--resume"]).output().unwrap());
    assert!(
        again.contains("already finished all 8 steps and its end phase"),
        "{again}"
    );
}

#[test]
fn resume_says_what_it_does_without_a_checkpoint_or_a_run() {
    let dir = scratch("no-checkpoint");
    let run = dir.join("run");
    let fresh = ok(train(&dir, &["--resume"]).output().unwrap());
    assert!(fresh.contains("no run directory"), "{fresh}");

    // Killed before its first checkpoint: its logs start again, step 0 is not doubled.
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    std::fs::remove_file(run.join("finished.json")).unwrap();
    truncate_log(&run.join("metrics.jsonl"), 2);
    truncate_log(&run.join("eval.jsonl"), 0);
    truncate_log(&run.join("eval_items.jsonl"), 0);
    let restarted = ok(train(&dir, &["--resume"]).output().unwrap());
    assert!(restarted.contains("no checkpoint yet"), "{restarted}");
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);
    assert_eq!(
        steps(&run.join("metrics.jsonl")),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn a_moved_run_resumes_and_a_changed_one_is_refused_naming_the_keys() {
    let dir = scratch("moved");
    ok(train(&dir, &["--quiet"]).output().unwrap());
    let run = dir.join("run");
    // Killed after step 4.
    std::fs::remove_dir_all(run.join("checkpoints/step-000008")).unwrap();
    for file in ["finished.json", "summary.md"] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
    let moved = dir.join("moved");
    std::fs::rename(&run, &moved).unwrap();
    let at = format!("output.dir={:?}", moved.display().to_string());

    let changed = failed(
        train(
            &dir,
            &["--resume", "--set", &at, "--set", "training.seed=1"],
        )
        .output()
        .unwrap(),
    );
    assert!(changed.contains("training.seed: 0 → 1"), "{changed}");
    assert!(
        !changed.contains("output.dir:"),
        "the location is not a difference: {changed}"
    );

    let resumed = ok(train(&dir, &["--resume", "--set", &at]).output().unwrap());
    assert!(resumed.contains("resuming from"), "{resumed}");
    assert_eq!(steps(&moved.join("eval.jsonl")), [0, 8]);
}

#[test]
fn a_resume_on_changed_data_is_refused_naming_the_file() {
    let dir = scratch("data");
    let root = bapo_testkit::workspace_root();
    let data = dir.join("preferences.jsonl");
    std::fs::copy(
        root.join("tests/fixtures/tiny-chat/preferences.jsonl"),
        &data,
    )
    .unwrap();
    let data_set = format!("data.path={:?}", data.display().to_string());
    ok(train(&dir, &["--quiet", "--set", &data_set])
        .output()
        .unwrap());
    let run = dir.join("run");
    // Killed after step 4, then the data file is edited (its last line doubled).
    std::fs::remove_dir_all(run.join("checkpoints/step-000008")).unwrap();
    for file in ["finished.json", "summary.md"] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
    let text = std::fs::read_to_string(&data).unwrap();
    let last = text.lines().last().unwrap().to_string();
    std::fs::write(&data, format!("{text}{last}\n")).unwrap();
    let refused = failed(
        train(&dir, &["--resume", "--set", &data_set])
            .output()
            .unwrap(),
    );
    assert!(
        refused.contains("`data.path`")
            && refused.contains("preferences.jsonl")
            && refused.contains("has changed since"),
        "{refused}"
    );
}

/// The chat template decides the tokens: a resume after it was edited (in
/// `tokenizer_config.json`) or added (`chat_template.jinja`) is refused, as after a changed
/// weight file (issue #26: it trained on under another tokenisation).
#[test]
fn a_resume_on_a_changed_chat_template_is_refused() {
    let dir = scratch("template");
    let (model, model_set) = tiny_model_copy(&dir);
    ok(train(&dir, &["--quiet", "--set", &model_set])
        .output()
        .unwrap());
    let run = dir.join("run");
    // Killed after step 4.
    std::fs::remove_dir_all(run.join("checkpoints/step-000008")).unwrap();
    for file in ["finished.json", "summary.md"] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
    let settings = model.join("tokenizer_config.json");
    let original = std::fs::read_to_string(&settings).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&original).unwrap();
    let template = edited["chat_template"].as_str().unwrap().to_string();
    edited["chat_template"] = format!("Chat:\n{template}").into();
    std::fs::write(&settings, edited.to_string()).unwrap();
    let resume = || {
        train(&dir, &["--resume", "--quiet", "--set", &model_set])
            .output()
            .unwrap()
    };
    let refused = failed(resume());
    assert!(
        refused.contains("`model.path`") && refused.contains("has changed since"),
        "{refused}"
    );
    // The template back as it was, and one added beside it as a file.
    std::fs::write(&settings, &original).unwrap();
    std::fs::write(model.join("chat_template.jinja"), template).unwrap();
    let refused = failed(resume());
    assert!(refused.contains("`model.path`"), "{refused}");
    std::fs::remove_file(model.join("chat_template.jinja")).unwrap();
    ok(resume());
}

/// `output.dir` naming a folder of the user's that is not a run: refused before anything is
/// written, its files untouched (issue #26: its config.toml, summary.md and plots were
/// overwritten); a folder with other files only, or an empty one, takes the run.
#[test]
fn a_folder_that_is_not_a_run_is_not_written_over() {
    let dir = scratch("foreign");
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("plots")).unwrap();
    std::fs::write(run.join("config.toml"), "mine = true\n").unwrap();
    std::fs::write(run.join("plots/figure.png"), "my figure").unwrap();
    for extra in [&["--quiet"][..], &["--resume", "--quiet"][..]] {
        let refused = failed(train(&dir, extra).output().unwrap());
        assert!(
            refused.contains("is not a bapo run")
                && refused.contains("config.toml, plots")
                && refused.contains("`output.dir`"),
            "{refused}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(run.join("config.toml")).unwrap(),
        "mine = true\n"
    );
    assert!(!run.join("lock").exists() && !run.join("metrics.jsonl").exists());

    // Unrelated files only: the run goes there, and they stay.
    let notes = dir.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("notes.txt"), "keep").unwrap();
    let set = format!("output.dir={:?}", notes.display().to_string());
    ok(train(&dir, &["--quiet", "--set", &set]).output().unwrap());
    assert!(notes.join("finished.json").exists());
    assert_eq!(
        std::fs::read_to_string(notes.join("notes.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn a_plot_that_cannot_be_written_fails_the_run_and_resume_finishes_it() {
    let dir = scratch("plots");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    // A run's folder (its lock file: not someone else's folder, which is refused).
    std::fs::write(run.join("lock"), "").unwrap();
    // Where the plots folder should go, a file: every plot write fails, as on a full disk.
    std::fs::write(run.join("plots"), "in the way").unwrap();
    let failed_run = failed(train(&dir, &["--quiet"]).output().unwrap());
    assert!(
        failed_run.contains("plots") && failed_run.contains("--resume"),
        "{failed_run}"
    );
    assert!(!run.join("finished.json").exists());
    assert!(run.join("checkpoints/step-000008").exists(), "nothing lost");

    std::fs::remove_file(run.join("plots")).unwrap();
    ok(train(&dir, &["--resume", "--quiet"]).output().unwrap());
    assert!(run.join("finished.json").exists());
    assert!(run.join("plots/loss.png").exists());
    assert!(!run.join("plots/loss.png.partial").exists());
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);
}

/// A failed export fails the run without recording its end phase, as a failed plot does, and
/// `--resume` exports it (issue #26: "export skipped", exit 0 and `finished.json`).
#[test]
fn a_failed_export_fails_the_run_and_resume_exports_it() {
    let dir = scratch("export-fails");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("lock"), "").unwrap();
    // Where the export is written before it is renamed into place, a file that cannot be
    // removed as a folder: the export fails, as on a full disk.
    std::fs::write(run.join("export.partial"), "in the way").unwrap();
    let export = ["--set", "checkpoint.export=true"];
    let failed_run = failed(
        train(&dir, &[&export[..], &["--quiet"]].concat())
            .output()
            .unwrap(),
    );
    assert!(
        failed_run.contains("the export failed") && failed_run.contains("--resume"),
        "{failed_run}"
    );
    assert!(!run.join("finished.json").exists());
    assert!(!run.join("export").exists());
    assert!(run.join("checkpoints/step-000008").exists(), "nothing lost");

    std::fs::remove_file(run.join("export.partial")).unwrap();
    ok(
        train(&dir, &[&export[..], &["--resume", "--quiet"]].concat())
            .output()
            .unwrap(),
    );
    assert!(run.join("finished.json").exists());
    assert!(run.join("export/model.safetensors").exists());
    assert!(!run.join("export.partial").exists());
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);

    // Killed after the export, before the end phase was recorded: resumed past the export.
    std::fs::remove_file(run.join("finished.json")).unwrap();
    let resumed = ok(train(&dir, &[&export[..], &["--resume"]].concat())
        .output()
        .unwrap());
    assert!(resumed.contains("export already written"), "{resumed}");
    assert!(run.join("finished.json").exists());
}

/// `bapo export --run` exports any checkpoint of a run as the run's end phase does: the newest
/// gives the same weights as the run's own export, an earlier one other weights, an existing
/// folder is never written over, and a model changed since the checkpoint is refused.
#[test]
fn export_run_writes_any_checkpoint_as_the_end_phase_does() {
    let dir = scratch("export-run");
    // A copy of the tiny model, so that it can be changed afterwards.
    let (model, model_set) = tiny_model_copy(&dir);
    ok(train(
        &dir,
        &[
            "--set",
            "checkpoint.export=true",
            "--set",
            &model_set,
            "--quiet",
        ],
    )
    .output()
    .unwrap());
    let run = dir.join("run");
    let export = |out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bapo"))
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let weights = |folder: &Path| std::fs::read(folder.join("model.safetensors")).unwrap();

    let newest = dir.join("newest");
    ok(export(&newest, &[]));
    assert_eq!(weights(&newest), weights(&run.join("export")));
    assert!(newest.join("tokenizer.json").exists());

    let step4 = dir.join("step4");
    let checkpoint = run.join("checkpoints/step-000004");
    ok(export(
        &step4,
        &["--checkpoint", checkpoint.to_str().unwrap()],
    ));
    assert_ne!(weights(&step4), weights(&newest));

    let refused = failed(export(&newest, &[]));
    assert!(refused.contains("already exists"), "{refused}");

    let mut weights_file = std::fs::OpenOptions::new()
        .append(true)
        .open(model.join("model.safetensors"))
        .unwrap();
    std::io::Write::write_all(&mut weights_file, b" ").unwrap();
    let refused = failed(export(&dir.join("changed"), &[]));
    assert!(
        refused.contains("`model.path`") && refused.contains("has changed since"),
        "{refused}"
    );
    assert!(!dir.join("changed").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// Leaves a finished 8-step run as a kill after its step-4 checkpoint would have (with
/// `keep_newest`, the step-8 checkpoint stays and only the end phase is undone).
fn undo_end_phase(run: &Path, keep_newest: bool) {
    if !keep_newest {
        std::fs::remove_dir_all(run.join("checkpoints/step-000008")).unwrap();
    }
    for file in ["finished.json", "summary.md"] {
        std::fs::remove_file(run.join(file)).unwrap();
    }
}

/// A resume may change what does not change the run: the data file's path (its bytes are
/// compared), the anchor cache's folder, the rows decoded together (issue #26: each was
/// refused as another config) and the memory savings (a run that ran out of memory resumes
/// with them on). Other bytes at the new path, and a run's config copy that no longer reads as
/// TOML, are refused.
#[test]
fn a_resume_takes_the_same_data_elsewhere_a_moved_anchor_cache_and_another_decode_batch() {
    let dir = scratch("relocated");
    ok(train(&dir, &["--quiet"]).output().unwrap());
    let run = dir.join("run");
    undo_end_phase(&run, false);
    let root = bapo_testkit::workspace_root();
    let fixture =
        std::fs::read_to_string(root.join("tests/fixtures/tiny-chat/preferences.jsonl")).unwrap();
    let data = dir.join("copied.jsonl");
    let data_set = format!("data.path={:?}", data.display().to_string());
    let cache = dir.join("moved-anchors");
    std::fs::rename(dir.join("anchors"), &cache).unwrap();
    let cache_set = format!("anchors.cache_dir={:?}", cache.display().to_string());
    let relocated = [
        "--resume",
        "--set",
        &data_set,
        "--set",
        &cache_set,
        "--set",
        "anchors.decode_batch=3",
        "--set",
        "training.gradient_checkpointing=true",
        "--set",
        "training.recompute_chunk_rows=1",
        "--set",
        "training.lm_head_chunk_tokens=3",
    ];

    // Other bytes at the new path: refused by the data's hash.
    let last = fixture.lines().last().unwrap();
    std::fs::write(&data, format!("{fixture}{last}\n")).unwrap();
    let refused = failed(train(&dir, &relocated).output().unwrap());
    assert!(
        refused.contains("`data.path`") && refused.contains("has changed since"),
        "{refused}"
    );
    let copy = run.join("config.toml");
    let kept = std::fs::read_to_string(&copy).unwrap();
    assert!(
        !kept.contains("copied.jsonl"),
        "a refused resume leaves the copy: {kept}"
    );
    // A config copy edited into something that is not TOML.
    let saved = std::fs::read_to_string(&copy).unwrap();
    std::fs::write(&copy, "[training\nseed = ").unwrap();
    let refused = failed(train(&dir, &relocated).output().unwrap());
    assert!(
        refused.contains("config.toml") && refused.contains("cannot be read"),
        "{refused}"
    );
    assert!(!refused.contains("(unset)"), "{refused}");
    std::fs::write(&copy, saved).unwrap();

    std::fs::write(&data, &fixture).unwrap();
    let resumed = ok(train(&dir, &relocated).output().unwrap());
    assert!(resumed.contains("resuming from"), "{resumed}");
    assert!(
        resumed.contains(" 0 computed") && !resumed.contains("tokens generated in"),
        "the anchors come from the moved cache: {resumed}"
    );
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);
}

/// A newest checkpoint that cannot be used (its `step` edited, a NaN in its weights, its
/// weights cut short) is refused, naming the older checkpoint that reads whole; moved aside,
/// the run resumes from that one (issue #26: an edited step resumed at the wrong step, a NaN
/// checkpoint was exported, a truncated one blocked the resume without a word of the older).
#[test]
fn a_damaged_newest_checkpoint_is_refused_naming_the_older_one() {
    let dir = scratch("damaged");
    ok(train(&dir, &["--quiet"]).output().unwrap());
    let run = dir.join("run");
    undo_end_phase(&run, true);
    let newest = run.join("checkpoints/step-000008");
    let older = "checkpoints/step-000004";
    let resume = || failed(train(&dir, &["--resume", "--quiet"]).output().unwrap());

    let state = newest.join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"step\": 8", "\"step\": 9")).unwrap();
    let refused = resume();
    assert!(
        refused.contains("state.json")
            && refused.contains("`step` is 9")
            && refused.contains(older),
        "{refused}"
    );
    std::fs::write(&state, &text).unwrap();

    let weights = newest.join("trainable.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut nan = bytes.clone();
    nan[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, &nan).unwrap();
    let refused = resume();
    assert!(
        refused.contains("NaN or infinite") && refused.contains(older),
        "{refused}"
    );

    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let refused = resume();
    assert!(
        refused.contains("trainable.safetensors") && refused.contains(older),
        "{refused}"
    );
    assert!(!run.join("finished.json").exists() && !run.join("export").exists());

    std::fs::rename(&newest, dir.join("step-000008-damaged")).unwrap();
    let resumed = ok(train(&dir, &["--resume"]).output().unwrap());
    assert!(resumed.contains("(step 4)"), "{resumed}");
    assert_eq!(steps(&run.join("eval.jsonl")), [0, 8]);
}

/// Weights that are not finite after a step are not written as a checkpoint, which `--resume`
/// and the export would take for trained weights (issue #26).
#[test]
fn weights_that_are_not_finite_are_not_checkpointed() {
    let dir = scratch("inf-weights");
    // A learning rate past f32's range: the first update makes every weight infinite.
    let refused = failed(
        train(
            &dir,
            &[
                "--quiet",
                "--set",
                "optimizer.learning_rate=1e39",
                "--set",
                "checkpoint.interval=1",
            ],
        )
        .output()
        .unwrap(),
    );
    assert!(
        refused.contains("step 1") && refused.contains("without writing its checkpoint"),
        "{refused}"
    );
    assert!(!dir.join("run/checkpoints/step-000001").exists());
}

/// What a failed or mistaken start leaves: `eval --write` on a run that does not exist is
/// refused instead of making it; a start that fails on a file named `tensorboard` leaves no
/// logs that would make the next start a resume; a `BAPO_PLOT_FONT` that is not a font fails
/// the run, whose `--resume` draws the plots (issue #26: a missing run was created, the next
/// start refused, the plots skipped with a note).
#[test]
fn failed_starts_leave_nothing_behind_and_a_named_font_must_be_usable() {
    let dir = scratch("starts");
    let run = dir.join("run");
    let root = bapo_testkit::workspace_root();
    let mut eval = Command::new(env!("CARGO_BIN_EXE_bapo"));
    eval.arg("eval")
        .arg("--config")
        .arg(root.join("configs/tiny.toml"))
        .arg("--write");
    for set in bapo_testkit::tiny_run_overrides(&dir) {
        eval.arg("--set").arg(set);
    }
    let refused = failed(eval.output().unwrap());
    assert!(refused.contains("not a run"), "{refused}");
    assert!(!run.exists(), "no run made");

    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("lock"), "").unwrap();
    std::fs::write(run.join("tensorboard"), "in the way").unwrap();
    failed(train(&dir, &["--quiet"]).output().unwrap());
    assert!(!run.join("metrics.jsonl").exists());
    std::fs::remove_file(run.join("tensorboard")).unwrap();

    let not_a_font = dir.join("not-a-font.ttf");
    std::fs::write(&not_a_font, "not a font").unwrap();
    let refused = failed(
        train(&dir, &["--quiet"])
            .env("BAPO_PLOT_FONT", &not_a_font)
            .output()
            .unwrap(),
    );
    assert!(
        refused.contains("BAPO_PLOT_FONT") && refused.contains("--resume"),
        "{refused}"
    );
    assert!(!run.join("finished.json").exists());
    ok(train(&dir, &["--resume", "--quiet"]).output().unwrap());
    assert!(run.join("plots/loss.png").exists());
}
