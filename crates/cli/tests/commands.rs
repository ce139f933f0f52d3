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

fn workspace() -> std::path::PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    std::path::Path::new(&manifest).join("../..")
}

/// The tiny GPT-2 (made by transformers, n_positions 64) with the tiny chat model's tokenizer,
/// which fits its vocabulary: a GPT-2 checkpoint bapo can load whole.
fn tiny_gpt2_with_tokenizer(tag: &str) -> std::path::PathBuf {
    let root = workspace();
    let gpt2 = std::env::temp_dir().join(format!("bapo-gpt2-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&gpt2).ok();
    std::fs::create_dir_all(&gpt2).unwrap();
    let tiny_gpt2 = root.join("crates/model/tests/fixtures/hf/tiny-gpt2");
    let tiny_chat = root.join("tests/fixtures/tiny-chat");
    for (from, file) in [
        (&tiny_gpt2, "config.json"),
        (&tiny_gpt2, "model.safetensors"),
        (&tiny_chat, "tokenizer.json"),
        (&tiny_chat, "tokenizer_config.json"),
    ] {
        std::fs::copy(from.join(file), gpt2.join(file)).unwrap();
    }
    gpt2
}

/// `bapo export` writes a GPT-2 checkpoint too (its config kept from loading): the export
/// loads back as GPT-2 and scores a completion as the original does.
#[test]
fn a_gpt2_checkpoint_exports_and_scores_the_same() {
    let gpt2 = tiny_gpt2_with_tokenizer("export");
    let out = gpt2.with_extension("exported");
    std::fs::remove_dir_all(&out).ok();
    let model = gpt2.to_str().unwrap();
    bapo(&["export", "--model", model, "--out", out.to_str().unwrap()]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_positions"], 64);
    let total = |model: &str| {
        let report: serde_json::Value = serde_json::from_str(&bapo(&[
            "score",
            "--model",
            model,
            "--prompt",
            "what colour is the sky ?",
            "--completion",
            " blue .",
            "--json",
        ]))
        .unwrap();
        report["total_logprob"].as_f64().unwrap()
    };
    let (before, after) = (total(model), total(out.to_str().unwrap()));
    assert!((before - after).abs() < 1e-5, "{before} vs {after}");
    std::fs::remove_dir_all(&gpt2).ok();
    std::fs::remove_dir_all(&out).ok();
}

/// A prompt past the model's positions is refused with the limit, not a panic: GPT-2 has no
/// position embedding past `n_positions` (64 in the tiny GPT-2, given the tiny chat model's
/// tokenizer here), and Llama-family models were never trained there (128 in the tiny chat
/// model).
#[test]
fn a_prompt_past_the_models_positions_is_refused() {
    let root = workspace();
    let gpt2 = tiny_gpt2_with_tokenizer("positions");
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

/// `score`, `generate` and `export` take `--backend`: with the `tch` feature (CI's build) they
/// run on `tch-cpu`; in the default build that backend is refused, named with its feature.
#[test]
fn model_commands_take_a_backend() {
    // Whether the binary has it: bapo-train's feature, however it was turned on.
    let compiled_in = bapo_train::BackendDevice::compiled_in(bapo_train::Backend::TchCpu);
    let model = workspace().join("tests/fixtures/tiny-chat");
    let out = std::env::temp_dir().join(format!("bapo-export-backend-{}", std::process::id()));
    for args in [
        vec!["score", "--prompt", "the sky is", "--completion", " blue"],
        vec![
            "generate",
            "--prompt",
            "the sky is",
            "--max-new-tokens",
            "4",
        ],
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
        if compiled_in {
            assert!(output.status.success(), "{}: {stderr}", args[0]);
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", args[0]);
        assert!(
            stderr.contains("backend `tch-cpu` is not compiled into this binary")
                && stderr.contains("feature `tch`"),
            "{}: {stderr}",
            args[0]
        );
    }
    assert_eq!(
        out.join("config.json").exists(),
        compiled_in,
        "exported only where tch-cpu is compiled in"
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_model_id_is_read_from_the_hub_cache_that_hf_home_names() {
    let root = bapo_testkit::workspace_root();
    let fixture = root.join("tests/fixtures/tiny-chat");
    let home = std::env::temp_dir().join(format!("bapo-hf-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let files = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    bapo_testkit::hub_cache(
        &home.join("hub"),
        "bapo-test/tiny-chat",
        &fixture,
        &files,
        "c0ffee",
    );
    let score = |model: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_bapo"))
            .args([
                "score",
                "--model",
                model,
                "--prompt",
                "what colour is the",
                "--completion",
                " sky ?",
                "--json",
            ])
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        score("bapo-test/tiny-chat"),
        score(fixture.to_str().unwrap())
    );
    std::fs::remove_dir_all(&home).ok();
}

/// `bapo probe` prints every probe with its chance level, what the shortest choice scores,
/// and accuracies inside their intervals; `country_facts` is the three kinds together.
#[test]
fn probe_reports_every_probe_against_chance() {
    let (Some(model), Some(bigbench)) = (smollm2(), bapo_testkit::asset("bigbench")) else {
        return;
    };
    let json = bapo(&[
        "probe",
        "--model",
        model.to_str().unwrap(),
        "--bigbench-dir",
        bigbench.to_str().unwrap(),
        "--items",
        "3",
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = rows.as_array().expect("a list");
    let names: Vec<&str> = rows.iter().map(|r| r["probe"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "hhh_alignment",
            "general_knowledge",
            "misconceptions",
            "country_border",
            "country_capital",
            "country_subregion",
            "country_facts"
        ]
    );
    for row in rows {
        let number = |key: &str| row[key].as_f64().unwrap();
        let expected_items = if row["probe"] == "country_facts" {
            9
        } else {
            3
        };
        assert_eq!(row["items"], expected_items, "{row}");
        assert!((0.0..=1.0).contains(&number("shortest_choice")), "{row}");
        for estimate in ["acc", "acc_norm", "acc_norm_above_chance"] {
            let e = &row[estimate];
            let (value, low, high) = (
                e["value"].as_f64().unwrap(),
                e["low"].as_f64().unwrap(),
                e["high"].as_f64().unwrap(),
            );
            assert!(low <= value && value <= high, "{estimate}: {row}");
        }
        let above = row["acc_norm_above_chance"]["value"].as_f64().unwrap();
        let acc_norm = row["acc_norm"]["value"].as_f64().unwrap();
        assert!((acc_norm - number("chance") - above).abs() < 1e-9, "{row}");
    }
    assert_eq!(rows[0]["chance"], 0.5, "HHH: two answers");
    assert_eq!(rows[6]["chance"], 0.25, "the country probe: four choices");
}
