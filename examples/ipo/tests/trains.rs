//! A third party trains its objective with bapo's loop by linking its crate and calling
//! `bapo_train::train`: nothing in the workspace knows about IPO.

use bapo_example_ipo as _;
use bapo_train::read_log;
use bapo_train::{RunConfig, TrainOptions, train};

#[test]
fn the_loop_trains_ipo() {
    let root = bapo_testkit::workspace_root();
    let dir = std::env::temp_dir().join(format!("bapo-ipo-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut overrides = bapo_testkit::tiny_run_overrides(&dir);
    overrides.extend([
        r#"objective={name="ipo", tau=0.5}"#.to_string(),
        "training.max_steps=30".into(),
        "optimizer.learning_rate=3e-3".into(),
    ]);
    let config = RunConfig::load(&root.join("configs/tiny.toml"), &overrides).unwrap();
    let summary = train(
        &config,
        &TrainOptions {
            quiet: true,
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let losses: Vec<f64> = read_log(&dir.join("run/metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|row| row.number("loss").expect("a loss at every step"))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(mean(&losses[20..]) < mean(&losses[..10]), "{losses:?}");
    assert!(
        summary.end["pref/truthful/margin"] > 0.0,
        "{:?}",
        summary.end
    );
}
