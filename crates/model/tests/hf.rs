//! Tiny random Llama, Qwen2 (q/k/v biases), tied-embedding Llama and GPT-2 checkpoints made by
//! `transformers` (`tests/fixtures/hf/make_tiny_models.py`) load from safetensors and give the
//! logits transformers computed, within 1e-4, including a right-padded row.

mod common;

use std::path::PathBuf;

use bapo_model::{
    CausalLm, CausalModel, GenerationConfig, Llama, PromptGroup, SharedPromptBatch, generate,
    sequence_logprobs, shared_sequence_logprobs,
};
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
    // The package folder at run time: a test binary built in another clone that shares the
    // target folder must not read that clone's fixtures.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("tests/fixtures/hf")
}

#[test]
fn tiny_models_match_transformers_logits() {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(reference.models.len(), 4);
    let device = Device::flex();
    for (name, expected) in &reference.models {
        let (model, config) = CausalLm::from_hf_dir(&fixtures().join(name), &device)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.vocab_size(), 128);
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

            let recomputed = common::greedy_by_recomputation(&model, prompt, 6, None, &device);
            assert_eq!(
                together, &recomputed,
                "{name}: cached vs full recomputation"
            );
        }
    }
}

/// Continuous batching: with room for two rows, seven prompts of different lengths (some
/// ending early on a stop token) are admitted as rows end, their caches joined and trimmed;
/// every row still gets, token for token, what its prompt gets alone.
#[test]
fn continuous_batching_equals_one_prompt_at_a_time_for_every_architecture() {
    let device = Device::flex();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let (model, _) = CausalLm::from_hf_dir(&fixtures().join(name), &device).unwrap();
        let prompts: Vec<Vec<u32>> = vec![
            vec![3, 17, 42, 99, 7],
            vec![8, 1],
            vec![77, 30, 2],
            vec![5; 9],
            vec![61],
            vec![12, 13, 14, 15],
            vec![90, 91],
        ];
        let alone_config = GenerationConfig {
            max_new_tokens: 7,
            max_batch: 1,
            ..GenerationConfig::default()
        };
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                generate(
                    &model,
                    std::slice::from_ref(p),
                    &alone_config,
                    &device,
                    |_, _| {},
                )
                .unwrap()
                .remove(0)
            })
            .collect();
        // Stop on a token some rows produce early, so rows end at different steps.
        let stop = alone
            .iter()
            .filter_map(|out| out.get(2).copied())
            .next()
            .unwrap();
        let config = GenerationConfig {
            stop_tokens: vec![stop],
            max_batch: 2,
            ..alone_config.clone()
        };
        let truncate = |out: &Vec<u32>| match out.iter().position(|&t| t == stop) {
            Some(i) => out[..=i].to_vec(),
            None => out.clone(),
        };
        let mut streamed = vec![Vec::new(); prompts.len()];
        let together = generate(&model, &prompts, &config, &device, |row, token| {
            streamed[row].push(token)
        })
        .unwrap();
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(&truncate(a), b, "{name}: prompt {i}");
        }
        assert_eq!(
            streamed, together,
            "{name}: tokens streamed to their prompt"
        );
        assert!(
            together.iter().any(|t| t.len() < 7),
            "{name}: some row ended early"
        );
    }
}

/// Three prompts with one to three completions each, one of them empty.
fn prompts_shared_by_completions() -> SharedPromptBatch {
    SharedPromptBatch {
        groups: vec![
            PromptGroup {
                prompt: vec![3, 17, 42, 99, 7],
                completions: vec![vec![8, 1, 4], vec![77], vec![30, 2, 9, 11, 12]],
            },
            PromptGroup {
                prompt: vec![5],
                completions: vec![vec![6, 7], vec![]],
            },
            PromptGroup {
                prompt: vec![61, 62, 63],
                completions: vec![vec![64, 65, 66, 67]],
            },
        ],
        pad_id: 0,
    }
}

/// Prefix sharing: a prompt computed once for several completions gives each completion the
/// log-probs it gets as its own `prompt + completion` row, per token, for every architecture
/// (GPT-2's learned positions included).
#[test]
fn shared_prompt_scoring_equals_one_row_per_completion_for_every_architecture() {
    let device = Device::flex();
    let batch = prompts_shared_by_completions();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let (model, _) = CausalLm::from_hf_dir(&fixtures().join(name), &device).unwrap();
        let shared = shared_sequence_logprobs(&model, &batch, &device).unwrap();
        let unshared = sequence_logprobs(&model, &batch.unshared(), &device).unwrap();
        let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        // Widths: the longest completion, and the longest prompt + completion row.
        let (width_shared, width_unshared) = (shared.per_token.dims()[1], 10);
        assert_eq!(width_shared, 5);
        assert_eq!(unshared.per_token.dims()[1], width_unshared);
        let (shared_tokens, unshared_tokens) =
            (values(shared.per_token), values(unshared.per_token));
        let mut sequence = 0;
        for group in &batch.groups {
            for completion in &group.completions {
                for i in 0..completion.len() {
                    let a = shared_tokens[sequence * width_shared + i];
                    let b = unshared_tokens[sequence * width_unshared + group.prompt.len() + i];
                    assert!(
                        (a - b).abs() < 1e-4 && a < 0.0,
                        "{name}: sequence {sequence} token {i}: {a} vs {b}"
                    );
                }
                sequence += 1;
            }
        }
        let totals = |t: Tensor<1>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let (a, b) = (totals(shared.total), totals(unshared.total));
        assert_eq!(a.len(), 6);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{name}: totals {a:?} vs {b:?}");
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

/// Every config.json field the architecture depends on is checked: what the code does not
/// compute is refused by name, not silently run as something else.
#[test]
fn unsupported_config_fields_are_refused_by_name() {
    let device = Device::flex();
    let dir = std::env::temp_dir().join(format!("bapo-hf-fields-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let config = std::fs::read_to_string(fixtures().join("tiny-llama/config.json")).unwrap();
    let cases = [
        (
            "\"hidden_act\": \"silu\"",
            "\"hidden_act\": \"gelu\"",
            "`hidden_act` = \"gelu\"",
        ),
        (
            "\"hidden_act\": \"silu\"",
            "\"hidden_act\": \"foo\"",
            "`hidden_act` = \"foo\"",
        ),
        (
            "\"rope_type\": \"default\"",
            "\"rope_type\": \"yarn\"",
            "rope_type `yarn`",
        ),
        (
            "\"use_cache\": true",
            "\"use_cache\": true, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
            "`rope_scaling` \"linear\"",
        ),
        (
            "\"attention_bias\": false",
            "\"attention_bias\": true",
            "`attention_bias` = true",
        ),
        (
            "\"mlp_bias\": false",
            "\"mlp_bias\": true",
            "`mlp_bias` = true",
        ),
        (
            "\"rms_norm_eps\": 1e-05",
            "\"rms_norm_eps\": 0.0",
            "`rms_norm_eps` = 0.0",
        ),
        (
            "\"rms_norm_eps\": 1e-05",
            "\"rms_norm_eps\": -1e-05",
            "`rms_norm_eps` = -0.00001",
        ),
        (
            "\"tie_word_embeddings\": false",
            "\"tie_word_embeddings\": \"no\"",
            "`tie_word_embeddings` = \"no\"",
        ),
        (
            "\"num_key_value_heads\": 2",
            "\"num_key_value_heads\": 3",
            "`num_key_value_heads` = 3",
        ),
        (
            "\"pretraining_tp\": 1",
            "\"pretraining_tp\": 2",
            "`pretraining_tp` = 2",
        ),
        (
            "\"use_cache\": true",
            "\"use_cache\": true, \"use_sliding_window\": true",
            "`use_sliding_window` = true",
        ),
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1",
            "`num_hidden_layers` is 1 but the weights hold layer 1",
        ),
    ];
    for (from, to, expected) in cases {
        let edited = config.replace(from, to);
        assert_ne!(edited, config, "{from}");
        std::fs::write(dir.join("config.json"), edited).unwrap();
        let err = Llama::from_hf_dir(&dir, &device).unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains("config.json"),
            "{to}: {err}"
        );
    }
    // A file of a checkpoint passed where its folder belongs says to pass the folder.
    let err = bapo_model::LoadedModel::open(&dir.join("model.safetensors"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pass its folder instead"), "{err}");

    // "swish" is SiLU under another name.
    std::fs::write(
        dir.join("config.json"),
        config.replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"swish\""),
    )
    .unwrap();
    Llama::from_hf_dir(&dir, &device).unwrap();
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
        err.contains("tokenizer.json") && err.contains("token id 202") && err.contains("128 rows"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_tokenizer_with_two_tokens_of_one_id_is_refused() {
    let dir = checkpoint_with_tokenizer("same-id", 100);
    let path = dir.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // `w0` is id 3, after the three special tokens.
    json["model"]["vocab"]["w1"] = 3.into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = bapo_model::LoadedModel::open(&dir, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("\"w0\" and \"w1\" both have id 3"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes `tensors` (name → (dtype, shape, bytes)) as a safetensors file.
fn write_safetensors(
    path: &std::path::Path,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The tensors of a fixture's `model.safetensors`.
fn read_tensors(name: &str) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixtures().join(name).join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(n, view)| (n, view.dtype(), view.shape().to_vec(), view.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn logits_of(model: &Llama) -> Vec<f32> {
    common::logits_of(model, &[3, 17, 42, 99], &Device::flex())
}

/// A checkpoint split into shards listed by `model.safetensors.index.json`, and one stored in
/// bf16, load like the single f32 file (bf16 within its rounding).
#[test]
fn sharded_and_half_precision_checkpoints_load() {
    let device = Device::flex();
    let (original, _) = Llama::from_hf_dir(&fixtures().join("tiny-llama"), &device).unwrap();
    let expected = logits_of(&original);
    let tensors = read_tensors("tiny-llama");

    let dir = std::env::temp_dir().join(format!("bapo-hf-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, shard) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        write_safetensors(&dir.join(file), shard);
        for (name, ..) in shard {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (sharded, _) = Llama::from_hf_dir(&dir, &device).unwrap();
    assert_eq!(logits_of(&sharded), expected);
    std::fs::remove_dir_all(&dir).ok();

    // bf16: every f32 rounded to the nearest bf16, as torch's `.to(torch.bfloat16)` does; the
    // loader casts back to f32.
    let dir = std::env::temp_dir().join(format!("bapo-hf-bf16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let bf16: Vec<_> = tensors
        .iter()
        .map(|(name, _, shape, data)| {
            let halves = data
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes()
                })
                .collect();
            (
                name.clone(),
                safetensors::Dtype::BF16,
                shape.clone(),
                halves,
            )
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &bf16);
    let (half_model, _) = Llama::from_hf_dir(&dir, &device).unwrap();
    let worst = logits_of(&half_model)
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst > 0.0 && worst < 0.05, "bf16 logits differ by {worst}");

    // An integer tensor where a weight belongs is rejected by name and dtype.
    let mut wrong = tensors.clone();
    let embed = wrong
        .iter_mut()
        .find(|t| t.0 == "model.embed_tokens.weight")
        .unwrap();
    embed.1 = safetensors::Dtype::I32;
    write_safetensors(&dir.join("model.safetensors"), &wrong);
    let err = Llama::from_hf_dir(&dir, &device).unwrap_err().to_string();
    assert!(
        err.contains("model.embed_tokens.weight") && err.contains("I32"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// transformers 5 saves the chat template to `chat_template.jinja`, not into
/// tokenizer_config.json: tests/fixtures/tiny-chat-tf5 is tiny-chat saved that way by
/// transformers 5.24. It loads with the same template, and bapo's export writes the same
/// layout, which loads back with it.
#[test]
fn a_checkpoint_saved_by_transformers_5_has_its_chat_template() {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let fixtures = std::path::Path::new(&manifest).join("../../tests/fixtures");
    let device = Device::flex();
    let old = bapo_model::LoadedModel::open(&fixtures.join("tiny-chat"), &device).unwrap();
    let new = bapo_model::LoadedModel::open(&fixtures.join("tiny-chat-tf5"), &device).unwrap();
    let source = |m: &bapo_model::LoadedModel| m.chat_template.as_ref().map(|t| t.source.clone());
    assert!(source(&old).is_some());
    assert_eq!(source(&new), source(&old));

    let out = std::env::temp_dir().join(format!("bapo-tf5-export-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    bapo_model::export_tokenizer(&new, &out).unwrap();
    let settings = std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap();
    assert!(!settings.contains("chat_template"), "{settings}");
    assert_eq!(
        std::fs::read_to_string(out.join("chat_template.jinja")).ok(),
        source(&old)
    );
    std::fs::remove_dir_all(&out).ok();
}

/// Scoring with the LM head a few rows at a time gives the log-probs of the full logits, per
/// token, for both layouts and every architecture (the anchor pass scores the reference so
/// with `training.lm_head_chunk_tokens`).
#[test]
fn chunked_scoring_equals_full_scoring() {
    let device = Device::flex();
    let batch = prompts_shared_by_completions();
    let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2"] {
        let (model, _) = CausalLm::from_hf_dir(&fixtures().join(name), &device).unwrap();
        let unshared = batch.unshared();
        let cases = [
            (
                bapo_model::ScoringLayout::of_shared(&batch).unwrap(),
                shared_sequence_logprobs(&model, &batch, &device).unwrap(),
            ),
            (
                bapo_model::ScoringLayout::of_tokens(&unshared).unwrap(),
                sequence_logprobs(&model, &unshared, &device).unwrap(),
            ),
        ];
        for (layout, unchunked) in cases {
            let unchunked = values(unchunked.per_token);
            for chunk in [0, 1, 3, 1000] {
                let chunked = values(
                    layout
                        .chunked_sequence_logprobs(&model, chunk, &device)
                        .per_token,
                );
                assert_eq!(unchunked.len(), chunked.len());
                for (a, b) in unchunked.iter().zip(&chunked) {
                    assert!(
                        (a - b).abs() <= 1e-6,
                        "{name}, chunks of {chunk}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
