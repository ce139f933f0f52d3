//! Tiny random Llama, Qwen2 (q/k/v biases), tied-embedding Llama and GPT-2 checkpoints made by
//! `transformers` (`tests/fixtures/hf/make_tiny_models.py`) load from safetensors and give the
//! logits transformers computed, within 1e-4, including a right-padded row.

use std::path::PathBuf;

use bapo_model::{CausalLm, CausalModel, GenerationConfig, Llama, generate};
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
    assert_eq!(reference.models.len(), 4);
    let device = Device::flex();
    for (name, expected) in &reference.models {
        let (model, vocab) = CausalLm::from_hf_dir(&fixtures().join(name), &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(vocab, 128);
        match &model {
            CausalLm::Llama(llama) => {
                assert_eq!(llama.lm_head.is_none(), name.ends_with("tied"), "{name}");
                assert_eq!(
                    llama.layers[0].attention.q_proj.bias.is_some(),
                    name.contains("qwen2"),
                    "{name}: q/k/v biases exactly for Qwen2"
                );
            }
            CausalLm::Gpt2(_) => assert!(name.contains("gpt2"), "{name}"),
        }

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

/// For every architecture: KV-cache decoding equals recomputing the whole sequence, and a
/// left-padded batch equals one prompt at a time (per-row positions, pads masked).
#[test]
fn cached_and_batched_generation_agree_for_every_architecture() {
    let device = Device::flex();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let (model, _) = CausalLm::from_hf_dir(&fixtures().join(name), &device).unwrap();
        let config = GenerationConfig {
            max_new_tokens: 6,
            ..GenerationConfig::default()
        };
        let prompts: Vec<Vec<u32>> = vec![vec![3, 17, 42, 99, 7], vec![8, 1], vec![77, 30, 2]];
        let batched = generate(&model, &prompts, &config, &device, |_, _| {}).unwrap();
        for (prompt, together) in prompts.iter().zip(&batched) {
            let alone = generate(
                &model,
                std::slice::from_ref(prompt),
                &config,
                &device,
                |_, _| {},
            )
            .unwrap();
            assert_eq!(
                &alone[0], together,
                "{name}: batched vs alone for {prompt:?}"
            );

            let mut sequence = prompt.clone();
            for _ in 0..6 {
                let ids: Vec<i64> = sequence.iter().map(|&t| i64::from(t)).collect();
                let n = ids.len();
                let logits = model.forward(Tensor::<2, Int>::from_data(
                    TensorData::new(ids, [1, n]),
                    &device,
                ));
                let last: Vec<f32> = logits
                    .narrow(1, n - 1, 1)
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .unwrap();
                sequence.push(
                    last.iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .unwrap()
                        .0 as u32,
                );
            }
            assert_eq!(
                together,
                &sequence[prompt.len()..],
                "{name}: cached vs full recomputation"
            );
        }
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

/// A checkpoint folder with a word-level `tokenizer.json` of `words` plus the special tokens.
fn checkpoint_with_tokenizer(tag: &str, words: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bapo-hf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-llama").join(file), dir.join(file)).unwrap();
    }
    let specials = ["<|im_end|>", "<|im_start|>", "[UNK]"];
    let mut vocab = serde_json::Map::new();
    for (id, token) in specials
        .iter()
        .map(|s| s.to_string())
        .chain((0..words).map(|i| format!("w{i}")))
        .enumerate()
    {
        vocab.insert(token, id.into());
    }
    let added: Vec<_> = specials[..2]
        .iter()
        .enumerate()
        .map(|(id, content)| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let settings = serde_json::json!({
        "eos_token": {"content": "<|im_end|>"},
        "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }} {{ m.content }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{% endif %}"
    });
    std::fs::write(dir.join("tokenizer_config.json"), settings.to_string()).unwrap();
    dir
}

#[test]
fn a_checkpoint_folder_loads_with_its_tokenizer_and_chat_template() {
    let device = Device::flex();
    let dir = checkpoint_with_tokenizer("ok", 100);
    let loaded = bapo_model::LoadedModel::open(&dir, &device).unwrap();
    assert_eq!(loaded.eos_token, 0);
    assert_eq!(loaded.pad_token, 0);
    let template = loaded.chat_template.as_ref().expect("a chat template");
    let prompt = template
        .render(&[bapo_model::ChatMessage::new("user", "w5 w7")], true)
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user w5 w7<|im_end|><|im_start|>assistant"
    );
    let ids = loaded.encode(&prompt).unwrap();
    assert_eq!(ids.first(), Some(&1));
    let config = bapo_model::GenerationConfig {
        max_new_tokens: 4,
        stop_tokens: vec![0],
        ..Default::default()
    };
    let out = bapo_model::generate(&loaded.model, &[ids], &config, &device, |_, _| {}).unwrap();
    assert!(!out[0].is_empty() && out[0].len() <= 4);
    assert!(out[0].iter().all(|&t| (t as usize) < 128));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused() {
    let dir = checkpoint_with_tokenizer("big", 200);
    let err = bapo_model::LoadedModel::open(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("203 tokens") && err.contains("128 rows"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
