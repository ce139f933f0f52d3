//! Export: the (merged) model as a Hugging Face checkpoint (`config.json` +
//! `model.safetensors`), and LoRA adapters in PEFT's layout (`adapter_config.json` +
//! `adapter_model.safetensors`), both readable by `transformers` / `peft`.
//!
//! Files are written to a temporary name and renamed into place, and existing files are never
//! overwritten: an export into a folder that already holds one is an error naming the file.

use std::path::Path;

use burn::module::{LoraAdapter, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;

use crate::ModelError;
use crate::file_projections::merged_weight;
use crate::gguf::BlockRows;
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};

/// A tensor to write: name, row-major shape, f32 values.
type Entry = (String, Vec<usize>, Vec<f32>);

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    // A base held quantized (`lora.base_quantization`) is written as its float values.
    tensor
        .dequantize()
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default()
}

/// A linear layer's effective weight (adapters merged) in PyTorch's `[out, in]` layout.
fn linear_entries(name: &str, linear: &Linear) -> Vec<Entry> {
    projection_entries(name, linear, None)
}

/// [`linear_entries`] of a projection whose frozen weight the GGUF file may hold (`file`).
fn projection_entries(name: &str, linear: &Linear, file: Option<&BlockRows>) -> Vec<Entry> {
    let weight = merged_weight(linear, file).transpose();
    let shape = weight.dims().to_vec();
    let mut entries = vec![(format!("{name}.weight"), shape, values(weight))];
    if let Some(bias) = &linear.bias {
        let bias = bias.val();
        entries.push((format!("{name}.bias"), bias.dims().to_vec(), values(bias)));
    }
    entries
}

fn vector_entry(name: &str, param: &Param<Tensor<1>>) -> Entry {
    let v = param.val();
    (name.to_string(), v.dims().to_vec(), values(v))
}

/// Writes `entries` as one safetensors file and `config` as JSON into `dir`.
fn write_checkpoint(
    dir: &Path,
    tensors_file: &str,
    entries: Vec<Entry>,
    config_file: &str,
    config: serde_json::Value,
) -> Result<(), ModelError> {
    let io = |path: &Path, e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for file in [tensors_file, config_file] {
        let path = dir.join(file);
        if path.exists() {
            return Err(ModelError::Io {
                path,
                message: "already exists; refusing to overwrite it".into(),
            });
        }
    }
    let bytes: Vec<Vec<u8>> = entries
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = entries
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| ModelError::Format {
                    path: dir.join(tensors_file),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized = safetensors::serialize(views, None).map_err(|e| ModelError::Format {
        path: dir.join(tensors_file),
        message: e.to_string(),
    })?;
    let json = serde_json::to_string_pretty(&config).unwrap_or_default();
    for (file, contents) in [(tensors_file, serialized), (config_file, json.into_bytes())] {
        let path = dir.join(file);
        let partial = dir.join(format!("{file}.partial"));
        std::fs::write(&partial, contents).map_err(|e| io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The `config.json` transformers needs for a Llama-family model.
fn hf_config(model: &Llama, c: &LlamaConfig) -> serde_json::Value {
    let qwen2 = model
        .layers
        .first()
        .is_some_and(|b| b.attention.q_proj.bias.is_some());
    let (model_type, architecture) = if qwen2 {
        ("qwen2", "Qwen2ForCausalLM")
    } else {
        ("llama", "LlamaForCausalLM")
    };
    let mut json = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tied_embeddings,
        "attention_bias": qwen2,
        "torch_dtype": "float32",
    });
    // transformers assumes 2048 positions where the file says nothing.
    if let Some(max) = c.max_positions {
        json["max_position_embeddings"] = max.into();
    }
    json
}

/// Writes a Llama-family model (LoRA adapters merged) as a transformers checkpoint.
pub fn export_hf(model: &Llama, config: &LlamaConfig, dir: &Path) -> Result<(), ModelError> {
    let mut entries = vec![{
        let embedding = model.embedding_weight();
        (
            "model.embed_tokens.weight".to_string(),
            embedding.dims().to_vec(),
            values(embedding),
        )
    }];
    for (i, block) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &block.attention;
        entries.push(vector_entry(
            &format!("{p}.input_layernorm.weight"),
            &block.input_norm.gamma,
        ));
        let file = |i: usize| a.file_weights.as_ref().map(|w| w.weight(i));
        for (i, (name, linear)) in [
            ("q_proj", &a.q_proj),
            ("k_proj", &a.k_proj),
            ("v_proj", &a.v_proj),
            ("o_proj", &a.o_proj),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{p}.self_attn.{name}");
            entries.extend(projection_entries(&name, linear, file(i)));
        }
        entries.push(vector_entry(
            &format!("{p}.post_attention_layernorm.weight"),
            &block.post_attention_norm.gamma,
        ));
        let m = &block.mlp;
        let file = |i: usize| m.file_weights.as_ref().map(|w| w.weight(i));
        for (i, (name, linear)) in [
            ("gate_proj", &m.gate_proj),
            ("up_proj", &m.up_proj),
            ("down_proj", &m.down_proj),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{p}.mlp.{name}");
            entries.extend(projection_entries(&name, linear, file(i)));
        }
    }
    entries.push(vector_entry("model.norm.weight", &model.norm.gamma));
    if let Some(head) = &model.head_linear() {
        entries.extend(linear_entries("lm_head", head));
    }
    write_checkpoint(
        dir,
        "model.safetensors",
        entries,
        "config.json",
        hf_config(model, config),
    )
}

/// Writes a GPT-2 model (LoRA adapters merged) as a transformers checkpoint. GPT-2's `Conv1D`
/// weights are `[in, out]`, Burn's own layout, so they are written as they are.
pub fn export_gpt2_hf(model: &Gpt2, config: &Gpt2Config, dir: &Path) -> Result<(), ModelError> {
    let conv1d = |name: &str, linear: &Linear| -> Vec<Entry> {
        let weight = linear.weight.val();
        let mut entries = vec![(
            format!("{name}.weight"),
            weight.dims().to_vec(),
            values(weight),
        )];
        if let Some(bias) = &linear.bias {
            entries.push(vector_entry(&format!("{name}.bias"), bias));
        }
        entries
    };
    let layer_norm = |name: &str, norm: &burn::nn::LayerNorm| -> Vec<Entry> {
        let mut entries = vec![vector_entry(&format!("{name}.weight"), &norm.gamma)];
        if let Some(beta) = &norm.beta {
            entries.push(vector_entry(&format!("{name}.bias"), beta));
        }
        entries
    };
    let matrix = |name: &str, param: &Param<Tensor<2>>| -> Entry {
        let v = param.val();
        (name.to_string(), v.dims().to_vec(), values(v))
    };
    let mut entries = vec![
        matrix("transformer.wte.weight", &model.wte.weight),
        matrix("transformer.wpe.weight", &model.wpe.weight),
    ];
    for (i, block) in model.blocks.iter().enumerate() {
        let p = format!("transformer.h.{i}");
        entries.extend(layer_norm(&format!("{p}.ln_1"), &block.ln_1));
        entries.extend(conv1d(&format!("{p}.attn.c_attn"), &block.c_attn));
        entries.extend(conv1d(&format!("{p}.attn.c_proj"), &block.attn_proj));
        entries.extend(layer_norm(&format!("{p}.ln_2"), &block.ln_2));
        entries.extend(conv1d(&format!("{p}.mlp.c_fc"), &block.c_fc));
        entries.extend(conv1d(&format!("{p}.mlp.c_proj"), &block.mlp_proj));
    }
    entries.extend(layer_norm("transformer.ln_f", &model.ln_f));
    let c = config;
    let hf = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.max_positions,
        "n_embd": c.hidden_size,
        "n_layer": c.num_layers,
        "n_head": c.num_heads,
        "n_inner": c.inner_size,
        "layer_norm_epsilon": c.layer_norm_eps,
        "activation_function": "gelu_new",
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
    });
    write_checkpoint(dir, "model.safetensors", entries, "config.json", hf)
}

/// Writes the LoRA adapters of a Llama-family model in PEFT's layout. PEFT's `lora_A` is
/// `[r, in]` and `lora_B` `[out, r]`: the transposes of Burn's `a` `[in, r]` and `b` `[r, out]`;
/// the scale `α / r` is the same.
pub fn export_peft_adapter(model: &Llama, base_model: &str, dir: &Path) -> Result<(), ModelError> {
    let mut entries = Vec::new();
    let mut targets = std::collections::BTreeSet::new();
    let mut settings: Option<(usize, f64)> = None;
    for (i, block) in model.layers.iter().enumerate() {
        let a = &block.attention;
        let m = &block.mlp;
        let linears = [
            ("self_attn", "q_proj", &a.q_proj),
            ("self_attn", "k_proj", &a.k_proj),
            ("self_attn", "v_proj", &a.v_proj),
            ("self_attn", "o_proj", &a.o_proj),
            ("mlp", "gate_proj", &m.gate_proj),
            ("mlp", "up_proj", &m.up_proj),
            ("mlp", "down_proj", &m.down_proj),
        ];
        for (group, name, linear) in linears {
            let Some(adapter) = linear.weight.reparameterization::<LoraAdapter>() else {
                continue;
            };
            let lora_a = adapter.a.val().transpose();
            let lora_b = adapter.b.val().transpose();
            let rank = lora_a.dims()[0];
            settings = Some((rank, adapter.scale * rank as f64));
            targets.insert(name);
            let prefix = format!("base_model.model.model.layers.{i}.{group}.{name}");
            entries.push((
                format!("{prefix}.lora_A.weight"),
                lora_a.dims().to_vec(),
                values(lora_a),
            ));
            entries.push((
                format!("{prefix}.lora_B.weight"),
                lora_b.dims().to_vec(),
                values(lora_b),
            ));
        }
    }
    let Some((rank, alpha)) = settings else {
        return Err(ModelError::Format {
            path: dir.to_path_buf(),
            message: "the model has no LoRA adapters to export".into(),
        });
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": targets.into_iter().collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    write_checkpoint(
        dir,
        "adapter_model.safetensors",
        entries,
        "adapter_config.json",
        config,
    )
}

/// Writes the tokenizer of `model` next to an exported checkpoint as transformers 5 does:
/// `tokenizer.json`, a `tokenizer_config.json` with the special tokens, and the chat template
/// in `chat_template.jinja`; transformers' `AutoTokenizer` loads it, and
/// `LoadedModel::from_hf_dir` reads it back.
pub fn export_tokenizer(model: &crate::LoadedModel, dir: &Path) -> Result<(), ModelError> {
    let io = |path: &Path, e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let token = |id: u32| model.tokenizer.id_to_token(id).unwrap_or_default();
    let mut settings = serde_json::json!({
        "eos_token": token(model.eos_token),
        "pad_token": token(model.pad_token),
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(template) = &model.chat_template {
        if !template.bos_token.is_empty() {
            settings["bos_token"] = template.bos_token.clone().into();
        }
        let path = dir.join(crate::hf::CHAT_TEMPLATE_FILE);
        std::fs::write(&path, &template.source).map_err(|e| io(&path, e))?;
    }
    let tokenizer_path = dir.join("tokenizer.json");
    model
        .tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| ModelError::Tokenizer {
            path: tokenizer_path.clone(),
            message: e.to_string(),
        })?;
    let settings_path = dir.join("tokenizer_config.json");
    let json = serde_json::to_string_pretty(&settings).unwrap_or_default();
    std::fs::write(&settings_path, json).map_err(|e| io(&settings_path, e))
}
