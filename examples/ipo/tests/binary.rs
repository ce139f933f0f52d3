//! The objective crate's own `bapo` (three lines, src/bin/bapo-ipo.rs) is the whole command
//! line with IPO linked: it lists IPO next to the built-ins and trains it by name.

use std::process::Command;

fn bapo_ipo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bapo-ipo"))
}

#[test]
fn bapo_ipo_lists_ipo_with_the_built_in_objectives() {
    let output = bapo_ipo().args(["objectives", "--json"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = list.iter().filter_map(|e| e["name"].as_str()).collect();
    for name in ["ipo", "dpo", "kl-dpo", "bapo", "mrpo"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn bapo_ipo_trains_ipo_by_name() {
    let root = bapo_testkit::workspace_root();
    let dir = std::env::temp_dir().join(format!("bapo-ipo-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = bapo_ipo();
    command
        .arg("train")
        .arg("--config")
        .arg(root.join("configs/tiny.toml"))
        .args(["--objective", "ipo", "--quiet"]);
    for set in bapo_testkit::tiny_run_overrides(&dir) {
        command.args(["--set", &set]);
    }
    command.args([
        "--set",
        "training.max_steps=2",
        "--set",
        "objective.tau=0.5",
    ]);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    let config: toml::Table = resolved.parse().unwrap();
    assert_eq!(
        config["objective"]["name"].as_str(),
        Some("ipo"),
        "{resolved}"
    );
    assert_eq!(
        config["objective"]["tau"].as_float(),
        Some(0.5),
        "{resolved}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
