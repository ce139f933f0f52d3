//! SimPO is registered by linking alone, computes TRL's `loss_type="simpo"` loss, and its own
//! `bapo-simpo` lists it and trains it by name on bapo's tiny fixture.

use std::process::Command;

use bapo_objective::{Quantities, Quantity, Response, registry};
use bapo_simpo as _;
use bapo_testkit::{Precision, assert_close, device, tensor, values};

#[test]
fn simpo_computes_trls_simpo_loss() {
    let settings: toml::Table = toml::from_str("beta = 2.5\ngamma = 0.8").unwrap();
    let simpo = registry::build("simpo", &settings).unwrap();
    let d = device();
    let t = |v: &[f64]| tensor(v, Precision::F64, &d);
    let (pc, pr, nc, nr) = ([-10.0, -4.0], [-12.0, -3.0], [5.0, 2.0], [4.0, 3.0]);
    let q = Quantities::new()
        .with(Quantity::PolicyLogp(Response::Chosen), t(&pc))
        .with(Quantity::PolicyLogp(Response::Rejected), t(&pr))
        .with(Quantity::TokenCount(Response::Chosen), t(&nc))
        .with(Quantity::TokenCount(Response::Rejected), t(&nr));
    let losses = values(&simpo.compute(&q).unwrap().losses);
    // TRL: logits = avg_c − avg_r − γ/β; loss = −logsigmoid(β · logits).
    let expected: Vec<f64> = (0..2)
        .map(|i| {
            let logits = pc[i] / nc[i] - pr[i] / nr[i] - 0.8 / 2.5;
            (1.0 + (-2.5 * logits).exp()).ln()
        })
        .collect();
    assert_close(&losses, &expected, 1e-12, 1e-12, "simpo");
}

#[test]
fn a_negative_margin_is_refused_naming_the_key() {
    let settings: toml::Table = toml::from_str("gamma = -1.0").unwrap();
    let error = registry::build("simpo", &settings).unwrap_err().to_string();
    assert!(error.contains("`objective.gamma` = -1"), "{error}");
}

fn bapo_simpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bapo-simpo"))
}

#[test]
fn bapo_simpo_lists_simpo_with_the_built_in_objectives() {
    let output = bapo_simpo()
        .args(["objectives", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = list.iter().filter_map(|e| e["name"].as_str()).collect();
    for name in ["simpo", "dpo", "kl-dpo", "bapo", "mrpo"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn bapo_simpo_trains_simpo_by_name() {
    let root = bapo_testkit::workspace_root();
    let dir = std::env::temp_dir().join(format!("bapo-simpo-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut command = bapo_simpo();
    command
        .arg("train")
        .arg("--config")
        .arg(root.join("configs/tiny.toml"))
        .args(["--objective", "simpo", "--quiet"]);
    for set in bapo_testkit::tiny_run_overrides(&dir) {
        command.args(["--set", &set]);
    }
    command.args([
        "--set",
        "training.max_steps=2",
        "--set",
        "objective.gamma=0.5",
    ]);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    let config: toml::Table = resolved.parse().unwrap();
    assert_eq!(config["objective"]["name"].as_str(), Some("simpo"));
    assert_eq!(config["objective"]["gamma"].as_float(), Some(0.5));
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"].as_u64(), Some(2), "{metrics}");
    assert!(
        last["loss"].as_f64().is_some_and(f64::is_finite),
        "{metrics}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
