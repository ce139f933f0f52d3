//! `bapo objectives` lists the built-in objectives with their defaults, as text and JSON.

use std::process::Command;

fn bapo(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_bapo"))
        .args(args)
        .output()
        .expect("the bapo binary runs");
    assert!(
        output.status.success(),
        "bapo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[test]
fn lists_every_built_in_objective_with_its_defaults() {
    let text = bapo(&["objectives"]);
    for (name, default) in [
        ("dpo", "label_smoothing = 0.0"),
        ("kl-dpo", "lambda_kl = 0.1"),
        ("bapo", "form = \"hinge\""),
        ("mrpo", "alpha = \"adaptive\""),
    ] {
        assert!(
            text.contains(&format!("name = \"{name}\"")),
            "{name} missing:\n{text}"
        );
        assert!(text.contains(default), "{default} missing:\n{text}");
    }
}

#[test]
fn json_output_parses() {
    let json: serde_json::Value = serde_json::from_str(&bapo(&["objectives", "--json"])).unwrap();
    let list = json.as_array().expect("a list");
    let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bapo", "dpo", "kl-dpo", "mrpo"]);
    assert_eq!(list[0]["defaults"]["lambda"], 1.0);
}
