//! Tiny random Llama, Qwen2 (q/k/v biases) and tied-embedding Llama checkpoints made by
//! `transformers` (`tests/fixtures/hf/make_tiny_models.py`) load from safetensors and give the
//! logits transformers computed, within 1e-4, including a right-padded row.

use std::path::PathBuf;

use bapo_model::Llama;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    ids: Vec<Vec<u32>>,
    lengths: Vec<usize>,
    models: std::collections::BTreeMap<String, ModelReference>,
}

#[derive(Deserialize)]
struct ModelReference {
    /// Per row, per real position, the logits over the vocabulary.
    logits: Vec<Vec<Vec<f32>>>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hf"))
}

#[test]
fn tiny_models_match_transformers_logits() {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(reference.models.len(), 3);
    let device = Device::flex();
    for (name, expected) in &reference.models {
        let (model, config) = Llama::from_hf_dir(&fixtures().join(name), &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.tied_embeddings, name.ends_with("tied"), "{name}");
        assert_eq!(model.lm_head.is_none(), config.tied_embeddings);
        assert_eq!(
            model.layers[0].attention.q_proj.bias.is_some(),
            name.contains("qwen2"),
            "{name}: q/k/v biases exactly for Qwen2"
        );

        let (rows, width) = (reference.ids.len(), reference.ids[0].len());
        let ids: Vec<i64> = reference
            .ids
            .iter()
            .flatten()
            .map(|&i| i64::from(i))
            .collect();
        let logits = model.forward(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [rows, width]),
            &device,
        ));
        let [_, _, vocab] = logits.dims();
        let got: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec().unwrap();
        let mut worst = 0.0f32;
        for (b, &length) in reference.lengths.iter().enumerate() {
            for t in 0..length {
                for v in 0..vocab {
                    let diff = (got[(b * width + t) * vocab + v] - expected.logits[b][t][v]).abs();
                    worst = worst.max(diff);
                }
            }
        }
        assert!(worst <= 1e-4, "{name}: largest logit difference {worst}");
    }
}

#[test]
fn missing_or_unsupported_checkpoints_are_clear_errors() {
    let device = Device::flex();
    let err = Llama::from_hf_dir(&fixtures().join("absent"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("absent") && err.contains("config.json"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("bapo-hf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "gpt_neox"}"#).unwrap();
    let err = Llama::from_hf_dir(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("gpt_neox") && err.contains("not supported"),
        "{err}"
    );

    // A config whose sizes disagree with the weights names the tensor and both shapes.
    let config = std::fs::read_to_string(fixtures().join("tiny-llama/config.json")).unwrap();
    let wrong = config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    assert_ne!(wrong, config);
    std::fs::write(dir.join("config.json"), wrong).unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let err = Llama::from_hf_dir(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("mlp.gate_proj.weight")
            && err.contains("[48, 32]")
            && err.contains("[64, 32]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
