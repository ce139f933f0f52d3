//! The objective crate's own `bapo` (three lines, src/bin/bapo-ipo.rs) is the whole command
//! line with IPO linked: it lists IPO next to the built-ins and trains it by name.

use bapo_testkit::binary::ObjectiveBinary;

fn bapo_ipo() -> ObjectiveBinary {
    ObjectiveBinary::new(env!("CARGO_BIN_EXE_bapo-ipo"))
}

#[test]
fn bapo_ipo_lists_ipo_with_the_built_in_objectives() {
    bapo_ipo().assert_lists("ipo");
}

#[test]
fn bapo_ipo_trains_ipo_by_name() {
    let run = bapo_ipo().train_tiny("ipo", &["objective.tau=0.5"]);
    let config = run.config();
    assert_eq!(config["objective"]["tau"].as_float(), Some(0.5), "{config}");
}
