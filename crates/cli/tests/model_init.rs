//! `bapo model init`: a checkpoint of another's shape with random weights, as the GPU check kit
//! makes SmolLM2-135M's there. Checked against fixtures made by transformers: every tensor of
//! the same name and shape (Qwen2's q/k/v biases included), HF's initialisation (norms 1,
//! biases 0, matrices N(0, initializer_range)), the position limit and the tokenizer carried
//! over, the same seed giving the same bytes, and a model `bapo score` loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;

fn root() -> PathBuf {
    // The run-time value (a shared target folder can hold a binary built in another clone).
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-model-init-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn bapo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bapo"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the bapo binary runs")
}

fn init(like: &Path, out: &Path, seed: &str) -> Output {
    bapo(&[
        "model",
        "init",
        "--like",
        like.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seed",
        seed,
    ])
}

fn init_ok(like: &Path, out: &Path, seed: &str) {
    let output = init(like, out, seed);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn values(tensors: &SafeTensors, name: &str) -> Vec<f32> {
    let view = tensors.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// The model in `made` has the tensors of the checkpoint in `fixture` (names and shapes), with
/// transformers' initialisation, and its position limit.
fn assert_shaped_like(fixture: &Path, made: &Path) {
    let fixture_bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&fixture_bytes).unwrap();
    let made_bytes = std::fs::read(made.join("model.safetensors")).unwrap();
    let got = SafeTensors::deserialize(&made_bytes).unwrap();
    let mut names: Vec<String> = want.names().into_iter().map(String::from).collect();
    let mut made_names: Vec<String> = got.names().into_iter().map(String::from).collect();
    names.sort();
    made_names.sort();
    assert_eq!(names, made_names, "the same tensors");
    let std = config(fixture)["initializer_range"].as_f64().unwrap();
    for name in &names {
        assert_eq!(
            want.tensor(name).unwrap().shape(),
            got.tensor(name).unwrap().shape(),
            "{name}"
        );
        let got = values(&got, name);
        if name.contains("norm") {
            assert!(got.iter().all(|&v| v == 1.0), "{name}: norms start at 1");
        } else if name.ends_with(".bias") {
            assert!(got.iter().all(|&v| v == 0.0), "{name}: biases start at 0");
        } else {
            let n = got.len() as f64;
            let mean = got.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let sd = (got
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            // Four standard errors of N(0, std)'s sample mean and sample std.
            assert!(mean.abs() < 4.0 * std / n.sqrt(), "{name}: mean {mean}");
            assert!(
                (sd - std).abs() < 4.0 * std / (2.0 * n).sqrt(),
                "{name}: std {sd}, want {std}"
            );
        }
    }
    assert_eq!(
        config(made)["max_position_embeddings"],
        config(fixture)["max_position_embeddings"],
        "the position limit"
    );
}

#[test]
fn makes_a_model_of_the_same_shape_with_random_weights() {
    let scratch = scratch("llama");
    let like = root().join("tests/fixtures/tiny-chat");
    let (a, b, c) = (scratch.join("a"), scratch.join("b"), scratch.join("c"));
    init_ok(&like, &a, "0");
    init_ok(&like, &b, "0");
    init_ok(&like, &c, "1");
    assert_shaped_like(&like, &a);
    assert_eq!(
        std::fs::read(like.join("tokenizer.json")).unwrap(),
        std::fs::read(a.join("tokenizer.json")).unwrap(),
        "the tokenizer is copied"
    );
    let made_bytes = std::fs::read(a.join("model.safetensors")).unwrap();
    assert_eq!(
        made_bytes,
        std::fs::read(b.join("model.safetensors")).unwrap(),
        "the same seed gives the same weights"
    );
    assert_ne!(
        made_bytes,
        std::fs::read(c.join("model.safetensors")).unwrap(),
        "another seed gives others"
    );

    // A model like any other: bapo loads and scores it.
    let score = bapo(&[
        "score",
        "--model",
        a.to_str().unwrap(),
        "--prompt",
        "the sky is",
        "--completion",
        " blue",
    ]);
    assert!(
        score.status.success(),
        "{}",
        String::from_utf8_lossy(&score.stderr)
    );

    // An existing checkpoint is not overwritten.
    let again = init(&like, &a, "5");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        made_bytes,
        std::fs::read(a.join("model.safetensors")).unwrap()
    );
    std::fs::remove_dir_all(&scratch).ok();
}

/// Qwen2's shape: its q/k/v projections get (zero) biases, as the fixture has them.
#[test]
fn a_qwen2_shape_gets_its_biases() {
    let scratch = scratch("qwen2");
    // The tiny Qwen2 ships no tokenizer: the tiny chat model's fits its vocabulary.
    let like = scratch.join("like");
    std::fs::create_dir_all(&like).unwrap();
    let qwen2 = root().join("crates/model/tests/fixtures/hf/tiny-qwen2");
    std::fs::copy(qwen2.join("config.json"), like.join("config.json")).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            root().join("tests/fixtures/tiny-chat").join(file),
            like.join(file),
        )
        .unwrap();
    }
    let made = scratch.join("made");
    init_ok(&like, &made, "0");
    assert_shaped_like(&qwen2, &made);
    assert_eq!(config(&made)["model_type"], "qwen2");
    std::fs::remove_dir_all(&scratch).ok();
}
