//! The study config expanded into cells, and its errors.

use bapo_study::{Grid, StudyConfig};

const CONFIG: &str = r#"
base = "configs/tiny.toml"
dir = "runs/s"
backend = "cpu"
user = "a"
seeds = [0, 1]
curve_interval = 4

[set]
"training.max_steps" = 8
"eval.examples_per_user" = 4

[[settings]]
name = "dpo"
objective = { name = "dpo", beta = 0.1 }

[[settings]]
name = "bapo-1"
objective = { name = "bapo", lambda = 1.0 }

[[settings]]
name = "mrpo"
objective = { name = "mrpo", references = 2 }
references = ["other"]

[[references]]
name = "other"
why = "trained on user b"
set = { "data.user" = "b", objective = { name = "dpo" }, "checkpoint.export" = true }

[heterogeneity]
users = ["b", "a"]
settings = ["dpo", "bapo-1"]
seeds = [0]

[quick]
dir = "runs/s-quick"
seeds = [3]
settings = ["bapo-1"]
heterogeneity_users = ["b"]
set = { "training.max_steps" = 2 }
"#;

fn load(text: &str) -> Result<StudyConfig, String> {
    let dir = std::env::temp_dir().join(format!("bapo-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.toml",
        text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::write(&path, text).unwrap();
    StudyConfig::load(&path).map_err(|e| e.to_string())
}

/// The cells' run directories, in order.
fn run_dirs(plan: &bapo_study::Plan) -> Vec<String> {
    plan.cells
        .iter()
        .map(|c| c.dir.display().to_string())
        .collect()
}

#[test]
fn the_full_grid_has_references_then_main_then_heterogeneity() {
    let plan = load(CONFIG).unwrap().plan(false);
    let names = run_dirs(&plan);
    assert_eq!(
        names,
        [
            "runs/s/other",
            "runs/s/dpo-a-seed0",
            "runs/s/dpo-a-seed1",
            "runs/s/bapo-1-a-seed0",
            "runs/s/bapo-1-a-seed1",
            "runs/s/mrpo-a-seed0",
            "runs/s/mrpo-a-seed1",
            // The trained user is not repeated in the heterogeneity grid.
            "runs/s/dpo-b-seed0",
            "runs/s/bapo-1-b-seed0",
        ]
    );
    assert_eq!(plan.cells[0].grid, Grid::Reference);
    assert_eq!(plan.cells[1].grid, Grid::Main);
    assert_eq!(plan.cells[8].grid, Grid::Heterogeneity);

    // The first seed evaluates along the way; the shared overrides come first, the cell's
    // own after them, the run directory last.
    let dpo0 = &plan.cells[1].overrides;
    assert_eq!(
        dpo0,
        &[
            r#"training.backend="cpu""#,
            "training.max_steps=8",
            "eval.examples_per_user=4",
            r#"objective={ name = "dpo", beta = 0.1 }"#,
            r#"data.user="a""#,
            "training.seed=0",
            "eval.interval=4",
            r#"output.dir="runs/s/dpo-a-seed0""#,
        ]
    );
    assert!(
        !plan.cells[2]
            .overrides
            .iter()
            .any(|o| o.starts_with("eval.interval"))
    );
    // MRPO reads the reference model's export.
    assert!(
        plan.cells[5]
            .overrides
            .contains(&r#"model.references=["runs/s/other/export"]"#.to_string())
    );
    // The reference model's run gets its own overrides, not the shared ones.
    assert!(
        !plan.cells[0]
            .overrides
            .iter()
            .any(|o| o.starts_with("training.max_steps"))
    );
    assert_eq!(plan.cells[0].user, "b");
    assert_eq!(plan.cells[0].objective, "dpo");
}

#[test]
fn quick_keeps_its_settings_seeds_users_and_overrides() {
    let plan = load(CONFIG).unwrap().plan(true);
    let names = run_dirs(&plan);
    // No MRPO in the quick grid, so no reference model either.
    assert_eq!(
        names,
        ["runs/s-quick/bapo-1-a-seed3", "runs/s-quick/bapo-1-b-seed3"]
    );
    let o = &plan.cells[0].overrides;
    let shared = o.iter().position(|x| x == "training.max_steps=8").unwrap();
    let quick = o.iter().position(|x| x == "training.max_steps=2").unwrap();
    assert!(quick > shared, "the quick override must come last: {o:?}");
}

#[test]
fn bad_configs_name_the_key() {
    let unknown_setting = CONFIG.replace(
        r#"settings = ["dpo", "bapo-1"]"#,
        r#"settings = ["dpo", "ipo"]"#,
    );
    let e = load(&unknown_setting).unwrap_err();
    assert!(
        e.contains("heterogeneity.settings") && e.contains("\"ipo\""),
        "{e}"
    );

    let no_export = CONFIG.replace(r#", "checkpoint.export" = true"#, "");
    let e = load(&no_export).unwrap_err();
    assert!(
        e.contains("references[0].set") && e.contains("export"),
        "{e}"
    );

    let bad_name = CONFIG.replace(r#"name = "bapo-1""#, r#"name = "bapo 1""#);
    let e = load(&bad_name).unwrap_err();
    assert!(e.contains("settings[1].name"), "{e}");

    let unknown_reference = CONFIG.replace(r#"references = ["other"]"#, r#"references = ["nope"]"#);
    let e = load(&unknown_reference).unwrap_err();
    assert!(
        e.contains("settings[2].references") && e.contains("nope"),
        "{e}"
    );

    let typo = CONFIG.replace("curve_interval = 4", "curve_intervall = 4");
    let e = load(&typo).unwrap_err();
    assert!(e.contains("curve_intervall"), "{e}");
}

/// The shipped study config parses and has what the issue asks for: four objectives, a λ grid
/// for KL-DPO and BAPO, BAPO's hinge, three or more seeds.
#[test]
fn the_shipped_config_is_valid() {
    // The run-time value: a target folder shared between clones can hold a test binary built
    // in another clone, whose compile-time path would point there.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let root = std::path::Path::new(&manifest).join("../..");
    let config = StudyConfig::load(&root.join("configs/study.toml")).unwrap();
    let plan = config.plan(false);
    let objectives: Vec<&str> = plan.settings.iter().map(|(_, o)| o.as_str()).collect();
    for (objective, at_least) in [("dpo", 1), ("kl-dpo", 2), ("bapo", 3), ("mrpo", 1)] {
        assert!(
            objectives.iter().filter(|o| **o == objective).count() >= at_least,
            "{objective}: {objectives:?}"
        );
    }
    assert!(plan.seeds.len() >= 3);
    assert!(config.plan(true).cells.len() < plan.cells.len());
}
