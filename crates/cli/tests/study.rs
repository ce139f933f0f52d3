//! The study's grid on the tiny fixture with the real `bapo`: every cell runs once; a second
//! pass skips them all; cells killed at different moments are resumed or started over, and a
//! resumed cell ends with the same evaluation as before; an edited config is refused; the
//! report is written from the runs.

use std::path::{Path, PathBuf};

use bapo_study::{Binaries, GridError, Output, StudyConfig, StudyData, run_grid, write_report};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-study-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &Path, steps: usize) -> String {
    format!(
        r#"
base = {base:?}
dir = {runs:?}
backend = "cpu"
user = "truthful"
learning_rates = [1e-2]
seeds = [0, 1]

[set]
"training.max_steps" = {steps}
"checkpoint.interval" = 4
"anchors.cache_dir" = {anchors:?}

[[settings]]
name = "dpo"
objective = {{ name = "dpo" }}

[[settings]]
name = "bapo-1"
objective = {{ name = "bapo", lambda = 1.0 }}

[heterogeneity]
users = ["contrarian"]
settings = ["dpo"]
seeds = [0]
learning_rate = 1e-2

[probes]

[rules]
levels = [0.5]
retention = [{{ metric = "knowledge/country_facts_norm", name = "probe", scale = 100.0, unit = "points", margin = 5.0, better = "higher" }}]
level = 0.95
alpha = 0.05
resamples = 200
confirmation_share = 0.5

[quick]
dir = {runs:?}
seeds = [0]
learning_rates = [1e-2]
settings = ["dpo"]
heterogeneity_users = []
heterogeneity_seeds = []
"#,
        base = dir.join("tiny.toml").display().to_string(),
        runs = dir.join("runs").display().to_string(),
        anchors = dir.join("anchors").display().to_string(),
    )
}

/// The study's plan, with a copy of configs/tiny.toml as its base config (the test edits it).
fn plan(dir: &Path, steps: usize) -> bapo_study::Plan {
    let base = dir.join("tiny.toml");
    if !base.exists() {
        let root = bapo_testkit::workspace_root();
        std::fs::copy(root.join("configs/tiny.toml"), &base).unwrap();
    }
    let path = dir.join("study.toml");
    std::fs::write(&path, config(dir, steps)).unwrap();
    StudyConfig::load(&path).unwrap().plan(false)
}

#[test]
fn the_grid_skips_finished_cells_and_resumes_killed_ones() {
    let root = bapo_testkit::workspace_root();
    let dir = scratch("grid");
    let binary = &Binaries::bapo(Path::new(env!("CARGO_BIN_EXE_bapo")));
    let plan = plan(&dir, 8);
    let runs = dir.join("runs");
    let cell = |name: &str| runs.join(name);

    let none = StudyData::default();
    let mut finished = 0;
    let first = run_grid(&root, &plan, binary, &[], &none, || {
        finished += 1;
        Ok(())
    })
    .unwrap();
    // The probe check, 2 settings × 2 seeds, 1 heterogeneity cell.
    assert_eq!(first.ran.len(), 6, "{first:?}");
    assert_eq!(finished, 6);
    assert!(first.resumed.is_empty());
    let items = |name: &str| std::fs::read_to_string(cell(name).join("eval_items.jsonl")).unwrap();
    let resumed_before = items("bapo-1-lr0.01-truthful-seed1");

    let second = run_grid(&root, &plan, binary, &[], &none, || Ok(())).unwrap();
    assert!(second.ran.is_empty(), "{second:?}");
    assert_eq!(second.skipped.len(), 6);

    // A killed run has neither its summary nor the record of its end phase.
    let unfinish = |name: &str| {
        for file in ["summary.md", "finished.json"] {
            std::fs::remove_file(cell(name).join(file)).unwrap();
        }
    };
    // Killed after its step-4 checkpoint: resumed from it.
    unfinish("bapo-1-lr0.01-truthful-seed1");
    std::fs::remove_dir_all(cell("bapo-1-lr0.01-truthful-seed1").join("checkpoints/step-000008"))
        .unwrap();
    // Killed before its first checkpoint: started over.
    unfinish("dpo-lr0.01-truthful-seed0");
    std::fs::remove_dir_all(cell("dpo-lr0.01-truthful-seed0").join("checkpoints")).unwrap();
    // Killed in its end phase after writing its summary, before the record of the end
    // phase: resumed, to finish it (issue #26: it was once counted finished for good).
    std::fs::remove_file(cell("dpo-lr0.01-contrarian-seed0").join("finished.json")).unwrap();

    let third = run_grid(&root, &plan, binary, &[], &none, || Ok(())).unwrap();
    let names = |paths: &[PathBuf]| -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&third.ran),
        [
            "dpo-lr0.01-truthful-seed0",
            "bapo-1-lr0.01-truthful-seed1",
            "dpo-lr0.01-contrarian-seed0"
        ]
    );
    assert_eq!(
        names(&third.resumed),
        [
            "bapo-1-lr0.01-truthful-seed1",
            "dpo-lr0.01-contrarian-seed0"
        ]
    );
    assert_eq!(items("bapo-1-lr0.01-truthful-seed1"), resumed_before);

    // Another budget: the finished cells were made with other settings (the probe check
    // comes first).
    let edited = self::plan(&dir, 6);
    match run_grid(&root, &edited, binary, &[], &none, || Ok(())) {
        Err(GridError::Changed { dir, .. }) => {
            assert!(dir.ends_with("probes"), "{dir}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The report, from the runs' data written out and read back.
    let data = StudyData::collect(&root, &plan, &none).unwrap();
    assert_eq!(data.runs.len(), 6);
    let path = runs.join("data.json");
    data.write(&path).unwrap();

    // A later sitting on a machine without the run directory: the run recorded in the data
    // file is not made again, and an edited config is refused there too.
    let recorded = StudyData::read(&path).unwrap();
    std::fs::remove_dir_all(cell("dpo-lr0.01-truthful-seed1")).unwrap();
    let fourth = run_grid(&root, &plan, binary, &[], &recorded, || Ok(())).unwrap();
    assert!(fourth.ran.is_empty(), "{fourth:?}");
    assert_eq!(fourth.skipped.len(), 6);
    match run_grid(&root, &edited, binary, &[], &recorded, || Ok(())) {
        Err(GridError::RecordedChanged { cell, .. }) => {
            assert!(cell.ends_with("probes"), "{cell}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // An edited base config makes every run another run (issue #26, item 9): refused in the
    // run directories and in the data file alike.
    let base = dir.join("tiny.toml");
    let text = std::fs::read_to_string(&base).unwrap();
    std::fs::write(
        &base,
        text.replacen("max_length = 64", "max_length = 48", 1),
    )
    .unwrap();
    match run_grid(&root, &plan, binary, &[], &none, || Ok(())) {
        Err(GridError::Changed { dir, .. }) => {
            assert!(dir.ends_with("probes"), "{dir}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match run_grid(&root, &plan, binary, &[], &recorded, || Ok(())) {
        Err(GridError::RecordedChanged { cell, .. }) => {
            assert!(cell.ends_with("probes"), "{cell}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let out = Output {
        markdown: runs.join("report.md"),
        images: runs.clone(),
        link_prefix: String::new(),
    };
    write_report(&plan, &StudyData::read(&path).unwrap(), "data.json", &out).unwrap();
    let report = std::fs::read_to_string(runs.join("report.md")).unwrap();
    assert!(
        report.contains("| dpo | dpo | primary | 2 (seeds 0, 1) |"),
        "{report}"
    );
    assert!(
        report.contains("| bapo-1 | bapo | primary | 2 (seeds 0, 1) |"),
        "{report}"
    );
    assert!(report.contains("## Verdict"), "{report}");
}

/// A setting whose objective has a binary of its own (an objective crate's `bapo-<objective>`,
/// docs/adding-an-objective.md) runs with it; every other cell with `bapo`.
#[test]
fn a_setting_runs_with_its_objectives_own_binary() {
    use std::os::unix::fs::PermissionsExt;
    let root = bapo_testkit::workspace_root();
    let dir = scratch("own-binary");
    let own = dir.join("bapo-own");
    std::fs::write(&own, "#!/bin/sh\necho \"own binary: $1\"\nexit 3\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut binaries = Binaries::bapo(Path::new(env!("CARGO_BIN_EXE_bapo")));
    binaries.by_objective.insert("bapo".into(), own);
    let plan = plan(&dir, 2);
    let none = StudyData::default();
    let failed = match run_grid(&root, &plan, &binaries, &[], &none, || Ok(())) {
        Err(GridError::Failed(failed)) => failed,
        other => panic!("expected the bapo setting's cells to fail, got {other:?}"),
    };
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|l| l.contains("bapo-1")), "{failed:?}");
    let logs: Vec<String> = std::fs::read_dir(dir.join("runs/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let by_own = logs
        .iter()
        .filter(|l| l.contains("own binary: train"))
        .count();
    assert_eq!(by_own, 2, "{logs:?}");
}
