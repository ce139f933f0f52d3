//! SimPO is registered by linking alone, computes TRL's `loss_type="simpo"` loss, and its own
//! `bapo-simpo` lists it and trains it by name on bapo's tiny fixture.

use bapo_objective::{Quantities, Quantity, Response, registry};
use bapo_simpo as _;
use bapo_testkit::binary::ObjectiveBinary;
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

fn bapo_simpo() -> ObjectiveBinary {
    ObjectiveBinary::new(env!("CARGO_BIN_EXE_bapo-simpo"))
}

#[test]
fn bapo_simpo_lists_simpo_with_the_built_in_objectives() {
    bapo_simpo().assert_lists("simpo");
}

#[test]
fn bapo_simpo_trains_simpo_by_name() {
    let run = bapo_simpo().train_tiny("simpo", &["objective.gamma=0.5"]);
    let config = run.config();
    assert_eq!(
        config["objective"]["gamma"].as_float(),
        Some(0.5),
        "{config}"
    );
}
