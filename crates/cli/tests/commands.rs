//! The `bapo` commands: `objectives` (text and JSON), `score` and `generate` on the real model,
//! and a clear error for a bad model file.

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
        ("bapo", "form = \"huber\""),
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

fn smollm2() -> Option<std::path::PathBuf> {
    bapo_testkit::smollm2_gguf()
}

#[test]
fn score_reports_the_reference_log_probs() {
    let Some(model) = smollm2() else { return };
    let model = model.to_str().unwrap();
    let json = bapo(&[
        "score",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--completion",
        " Paris",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let paris = report["completion"][0]["logprob"].as_f64().unwrap();
    assert!((paris - -0.258).abs() < 1e-2, "{paris}");
    assert_eq!(report["top_next_tokens"][0]["id"], 7042);
    assert_eq!(report["prompt_tokens"], 5);
}

#[test]
fn generate_answers_in_chat_mode() {
    let Some(model) = smollm2() else { return };
    let out = bapo(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "What is the capital of Japan?",
        "--chat",
        "--max-new-tokens",
        "16",
    ]);
    assert_eq!(out.trim(), "The capital of Japan is Tokyo.");
}

#[test]
fn a_bad_model_file_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_bapo"))
        .args([
            "score",
            "--model",
            "Cargo.toml",
            "--prompt",
            "a",
            "--completion",
            "b",
        ])
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Cargo.toml") && stderr.contains("not a GGUF file"),
        "{stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
