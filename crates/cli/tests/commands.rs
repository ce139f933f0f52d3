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

/// A prompt past the model's positions is refused with the limit, not a panic: GPT-2 has no
/// position embedding past `n_positions` (64 in the tiny GPT-2, given the tiny chat model's
/// tokenizer here), and Llama-family models were never trained there (128 in the tiny chat
/// model).
#[test]
fn a_prompt_past_the_models_positions_is_refused() {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let root = std::path::Path::new(&manifest).join("../..");
    let gpt2 = std::env::temp_dir().join(format!("bapo-gpt2-{}", std::process::id()));
    std::fs::create_dir_all(&gpt2).unwrap();
    for (from, file) in [
        ("crates/model/tests/fixtures/hf/tiny-gpt2", "config.json"),
        (
            "crates/model/tests/fixtures/hf/tiny-gpt2",
            "model.safetensors",
        ),
        ("tests/fixtures/tiny-chat", "tokenizer.json"),
        ("tests/fixtures/tiny-chat", "tokenizer_config.json"),
    ] {
        std::fs::copy(root.join(from).join(file), gpt2.join(file)).unwrap();
    }
    let long = "the sky is blue . ".repeat(30); // 150 tokens
    let tiny_chat = root.join("tests/fixtures/tiny-chat");
    for (model, positions, command) in [
        (&gpt2, 64, ["score", "--completion", " red"]),
        (&tiny_chat, 128, ["generate", "--max-new-tokens", "8"]),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bapo"))
            .args(&command[..1])
            .arg("--model")
            .arg(model)
            .args(["--prompt", &long])
            .args(&command[1..])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", command[0]);
        assert!(
            stderr.contains(&format!("longer than the model's {positions} positions")),
            "{}: {stderr}",
            command[0]
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", command[0]);
    }
    std::fs::remove_dir_all(&gpt2).ok();
}

/// `score`, `generate` and `export` take `--backend`: in the default build, a backend that is
/// not compiled in is named with its feature (`cargo xtask backends` runs them on the others).
#[test]
fn model_commands_take_a_backend() {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let model = std::path::Path::new(&manifest).join("../../tests/fixtures/tiny-chat");
    let out = std::env::temp_dir().join(format!("bapo-export-backend-{}", std::process::id()));
    for args in [
        vec!["score", "--prompt", "the sky is", "--completion", " blue"],
        vec!["generate", "--prompt", "the sky is"],
        vec!["export", "--out", out.to_str().unwrap()],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_bapo"))
            .args(&args)
            .arg("--model")
            .arg(&model)
            .args(["--backend", "tch-cpu"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", args[0]);
        assert!(
            stderr.contains("backend `tch-cpu` is not compiled into this binary")
                && stderr.contains("feature `tch`"),
            "{}: {stderr}",
            args[0]
        );
    }
    assert!(!out.exists(), "nothing was exported");
}
