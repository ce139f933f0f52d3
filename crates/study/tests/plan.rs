//! The study config expanded into cells, and its errors.

use bapo_study::{Grid, Role, StudyConfig};

const CONFIG: &str = r#"
base = "configs/tiny.toml"
dir = "runs/s"
backend = "cpu"
user = "a"
learning_rates = [1e-3]
seeds = [0, 1]
secondary_seeds = [0]
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
role = "secondary"
objective = { name = "mrpo", references = 2 }
references = ["other"]

[[references]]
name = "other"
why = "trained on user b"
set = { "data.user" = "b", objective = { name = "dpo" }, "checkpoint.export" = true }

[[not_tested]]
objective = "ipo"
why = "not needed"

[heterogeneity]
users = ["b", "a"]
settings = ["dpo", "bapo-1"]
seeds = [0]
learning_rate = 2e-3
set = { "training.max_steps" = 4 }

[probes]
set = { "eval.hhh_alignment" = 1000 }

[rules]
levels = [0.25, 0.5]
retention = [{ metric = "knowledge/country_facts_norm", name = "probe", scale = 100.0, unit = "points", margin = 5.0, better = "higher" }]
level = 0.95
alpha = 0.05
resamples = 1000
confirmation_share = 0.5

[quick]
dir = "runs/s-quick"
seeds = [3]
learning_rates = [2e-3]
settings = ["bapo-1"]
heterogeneity_users = ["b"]
heterogeneity_seeds = [3]
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
fn the_full_grid_has_references_then_probes_then_main_then_heterogeneity() {
    let plan = load(CONFIG).unwrap().plan(false);
    let names = run_dirs(&plan);
    assert_eq!(
        names,
        [
            "runs/s/other",
            "runs/s/probes",
            "runs/s/dpo-lr0.001-a-seed0",
            "runs/s/dpo-lr0.001-a-seed1",
            "runs/s/bapo-1-lr0.001-a-seed0",
            "runs/s/bapo-1-lr0.001-a-seed1",
            // A secondary setting runs the secondary seeds only.
            "runs/s/mrpo-lr0.001-a-seed0",
            "runs/s/dpo-lr0.002-b-seed0",
            "runs/s/bapo-1-lr0.002-b-seed0",
            "runs/s/dpo-lr0.002-a-seed0",
            "runs/s/bapo-1-lr0.002-a-seed0",
        ]
    );
    let grids: Vec<Grid> = plan.cells.iter().map(|c| c.grid).collect();
    assert_eq!(grids[..3], [Grid::Reference, Grid::Probes, Grid::Main]);
    assert_eq!(grids[7], Grid::Heterogeneity);
    assert_eq!(plan.cells[6].role, Role::Secondary);

    // The shared overrides come first, the cell's own after them, the run directory last.
    assert_eq!(
        plan.cells[2].overrides,
        [
            r#"training.backend="cpu""#,
            "training.max_steps=8",
            "eval.examples_per_user=4",
            r#"objective={ name = "dpo", beta = 0.1 }"#,
            r#"data.user="a""#,
            r#"eval.users=["a"]"#,
            "optimizer.learning_rate=0.001",
            "training.seed=0",
            "eval.interval=4",
            r#"output.dir="runs/s/dpo-lr0.001-a-seed0""#,
        ]
    );
    // The heterogeneity grid: its own overrides after the shared ones, no curve.
    let het = &plan.cells[7].overrides;
    let shared = het
        .iter()
        .position(|x| x == "training.max_steps=8")
        .unwrap();
    let own = het
        .iter()
        .position(|x| x == "training.max_steps=4")
        .unwrap();
    assert!(own > shared, "{het:?}");
    assert!(
        !het.iter().any(|o| o.starts_with("eval.interval")),
        "{het:?}"
    );
    // The probe check: one step, the probes' overrides.
    let probes = &plan.cells[1].overrides;
    assert!(
        probes.contains(&"eval.hhh_alignment=1000".to_string()),
        "{probes:?}"
    );
    assert!(
        probes.contains(&"training.max_steps=1".to_string()),
        "{probes:?}"
    );
    // MRPO reads the reference model's export.
    assert!(
        plan.cells[6]
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
    assert_eq!(plan.rules.levels, [0.25, 0.5]);
    assert_eq!(
        plan.not_tested,
        [("ipo".to_string(), "not needed".to_string())]
    );
    assert_eq!(plan.heterogeneity_users, ["b", "a"]);
}

#[test]
fn quick_keeps_its_settings_seeds_users_and_overrides() {
    let plan = load(CONFIG).unwrap().plan(true);
    let names = run_dirs(&plan);
    // No MRPO in the quick grid, so no reference model either.
    assert_eq!(
        names,
        [
            "runs/s-quick/probes",
            "runs/s-quick/bapo-1-lr0.002-a-seed3",
            "runs/s-quick/bapo-1-lr0.002-b-seed3"
        ]
    );
    let o = &plan.cells[1].overrides;
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

    // The main user in the heterogeneity grid at a main learning rate and seed.
    let clash = CONFIG.replace("learning_rate = 2e-3", "learning_rate = 1e-3");
    let e = load(&clash).unwrap_err();
    assert!(
        e.contains("`heterogeneity`") && e.contains("dpo-lr0.001-a-seed0"),
        "{e}"
    );

    let typo = CONFIG.replace("curve_interval = 4", "curve_intervall = 4");
    let e = load(&typo).unwrap_err();
    assert!(e.contains("curve_intervall"), "{e}");

    let bad_level = CONFIG.replace("levels = [0.25, 0.5]", "levels = [1.5]");
    let e = load(&bad_level).unwrap_err();
    assert!(e.contains("rules.levels"), "{e}");

    let bad_share = CONFIG.replace("confirmation_share = 0.5", "confirmation_share = 1.0");
    let e = load(&bad_share).unwrap_err();
    assert!(e.contains("rules.confirmation_share"), "{e}");

    for outside in ["../docs/s", "/tmp/s", ""] {
        let committed = CONFIG.replace(
            "dir = \"runs/s\"\n",
            &format!("dir = \"runs/s\"\ncommitted = {outside:?}\n"),
        );
        let e = load(&committed).unwrap_err();
        assert!(
            e.contains("`committed`") && e.contains("below the workspace root"),
            "{outside}: {e}"
        );
    }
    let committed = CONFIG.replace(
        "dir = \"runs/s\"\n",
        "dir = \"runs/s\"\ncommitted = \"docs/s\"\n",
    );
    assert_eq!(load(&committed).unwrap().committed, Some("docs/s".into()));
}

/// A study config shipped in the workspace (`path` relative to its root), loaded.
fn shipped(path: &str) -> StudyConfig {
    // The run-time value: a target folder shared between clones can hold a test binary built
    // in another clone, whose compile-time path would point there.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let root = std::path::Path::new(&manifest).join("../..");
    StudyConfig::load(&root.join(path)).unwrap_or_else(|e| panic!("{e}"))
}

/// The shipped study config parses and has what issue #22 asks for: the three compared
/// objectives as primary settings, two learning rates or more, five seeds or more for the
/// verdict's settings, six heterogeneity users, rules declared with every margin positive.
#[test]
fn the_shipped_config_is_valid() {
    let config = shipped("configs/study.toml");
    let plan = config.plan(false);
    for objective in ["dpo", "kl-dpo", "bapo"] {
        assert!(
            plan.settings
                .iter()
                .any(|(_, o, role)| o == objective && *role == Role::Primary),
            "{objective}: {:?}",
            plan.settings
        );
    }
    assert!(plan.learning_rates.len() >= 2);
    assert!(plan.seeds.len() >= 5);
    assert!(plan.heterogeneity_users.len() >= 6);
    assert!(!plan.rules.levels.is_empty() && !plan.rules.retention.is_empty());
    assert!(plan.not_tested.iter().any(|(o, _)| o == "mrpo"));
    assert!(config.plan(true).cells.len() < plan.cells.len());
    assert_eq!(config.committed, Some("docs/study".into()));
}

/// The config without its optional parts: no `[heterogeneity]`, `[probes]` or `[quick]`.
fn without_optional_tables() -> String {
    let mut text = CONFIG.to_string();
    for table in ["[heterogeneity]", "[probes]", "[quick]"] {
        let start = text.find(table).unwrap();
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |i| start + 1 + i + 1);
        text.replace_range(start..end, "");
    }
    text
}

#[test]
fn a_study_without_heterogeneity_probes_or_quick_is_its_main_grid_alone() {
    let config = load(&without_optional_tables()).unwrap();
    assert!(!config.has_quick());
    let plan = config.plan(false);
    assert!(!plan.has_heterogeneity() && !plan.has_probes());
    assert!(
        plan.cells
            .iter()
            .all(|c| matches!(c.grid, Grid::Main | Grid::Reference)),
        "{:?}",
        run_dirs(&plan)
    );
    // The same grid as with them, less the probe check and the heterogeneity grid.
    let full = load(CONFIG).unwrap().plan(false);
    let kept: Vec<String> = full
        .cells
        .iter()
        .filter(|c| matches!(c.grid, Grid::Main | Grid::Reference))
        .map(|c| c.dir.display().to_string())
        .collect();
    assert_eq!(run_dirs(&plan), kept);
}

#[test]
fn log_figures_are_read_with_their_line_and_bad_ones_name_the_key() {
    let figure = |name: &str, at: &str| {
        format!(
            "\n[[log_figures]]\nname = {name:?}\nlog = \"metrics\"\nkey = \"grad_norm\"\nat = {at:?}\n"
        )
    };
    let two = format!(
        "{CONFIG}{}{}",
        figure("first", "step 1"),
        figure("top", "max")
    );
    let plan = load(&two).unwrap().plan(false);
    let read: Vec<(String, String)> = plan
        .log_figures
        .iter()
        .map(|f| (f.name.clone(), f.at.to_string()))
        .collect();
    assert_eq!(
        read,
        [
            ("first".into(), "step 1".into()),
            ("top".into(), "max".into())
        ]
    );

    let e = load(&format!("{CONFIG}{}", figure("first", "step one"))).unwrap_err();
    assert!(
        e.contains("at = \"step one\"") && e.contains("\"step N\""),
        "{e}"
    );

    let e = load(&format!(
        "{CONFIG}{}{}",
        figure("g", "last"),
        figure("g", "max")
    ))
    .unwrap_err();
    assert!(
        e.contains("log_figures[1].name") && e.contains("twice"),
        "{e}"
    );

    let e = load(&format!(
        "{CONFIG}{}",
        figure("g", "last").replace("metrics", "events")
    ))
    .unwrap_err();
    assert!(e.contains("events"), "{e}");
}

/// configs/anchor-forms.toml: the anchor-form comparison as a study of the quickstart, its
/// forms and DPO, with the runs' log figures that chose the default form.
#[test]
fn the_anchor_forms_config_is_valid() {
    let config = shipped("configs/anchor-forms.toml");
    let plan = config.plan(false);
    assert!(!plan.has_heterogeneity() && !plan.has_probes() && !config.has_quick());
    assert_eq!(plan.cells.len(), 8, "{:?}", run_dirs(&plan));
    for form in ["huber", "hinge", "squared_hinge"] {
        assert!(
            plan.cells.iter().any(|c| c
                .overrides
                .iter()
                .any(|o| o.contains(&format!("form = \"{form}\"")))),
            "{form}"
        );
    }
    let names: Vec<&str> = plan.log_figures.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"step-1 grad norm") && names.contains(&"largest grad norm"));
}
