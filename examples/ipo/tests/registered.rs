//! The example objective is visible in the registry by linking alone, and computes IPO.

use bapo_example_ipo as _;
use bapo_objective::{Quantities, Quantity, Response, registry};
use bapo_testkit::{Precision, assert_close, device, scalar, tensor};

#[test]
fn ipo_appears_in_the_registry() {
    let entry = registry::find("ipo").expect("ipo is registered by linking the crate");
    assert_eq!(entry.name, "ipo");
    let defaults = (entry.defaults)();
    assert_eq!(defaults.get("tau").and_then(|v| v.as_float()), Some(0.1));
    assert!(registry::names().contains(&"ipo".to_string()));
}

#[test]
fn ipo_computes_the_squared_gap_loss() {
    let settings: toml::Table = toml::from_str("tau = 0.25\nlength_normalize = true").unwrap();
    let ipo = registry::build("ipo", &settings).unwrap();
    assert!(
        ipo.needs()
            .contains(&Quantity::TokenCount(Response::Chosen))
    );

    let d = device();
    let t = |v: &[f64]| tensor(v, Precision::F64, &d);
    let q = Quantities::new()
        .with(Quantity::PolicyLogp(Response::Chosen), t(&[-10.0, -4.0]))
        .with(Quantity::PolicyLogp(Response::Rejected), t(&[-12.0, -3.0]))
        .with(
            Quantity::ReferenceLogp {
                reference: 0,
                response: Response::Chosen,
            },
            t(&[-11.0, -4.0]),
        )
        .with(
            Quantity::ReferenceLogp {
                reference: 0,
                response: Response::Rejected,
            },
            t(&[-11.0, -4.0]),
        )
        .with(Quantity::TokenCount(Response::Chosen), t(&[5.0, 2.0]))
        .with(Quantity::TokenCount(Response::Rejected), t(&[4.0, 1.0]));
    let out = ipo.compute(&q).unwrap();

    // By hand: h = (pc − rc)/nc − (pr − rr)/nr; loss = (h − 1/(2·0.25))² = (h − 2)².
    let h0 = (-10.0 - -11.0) / 5.0 - (-12.0 - -11.0) / 4.0; // 0.45
    let h1 = (-4.0 - -4.0) / 2.0 - (-3.0 - -4.0) / 1.0; // −1
    let expected = [(h0 - 2.0f64).powi(2), (h1 - 2.0f64).powi(2)];
    assert_close(
        &bapo_testkit::values(&out.losses),
        &expected,
        1e-12,
        1e-12,
        "ipo losses",
    );
    assert!(scalar(&out.mean_loss()) > 0.0);
}

#[test]
fn ipo_rejects_a_non_positive_tau_by_name() {
    let settings: toml::Table = toml::from_str("tau = 0").unwrap();
    let err = registry::build("ipo", &settings).unwrap_err().to_string();
    assert!(err.contains("objective.tau"), "{err}");
}
