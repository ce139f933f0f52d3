//! Hugging Face checkpoints: `config.json` plus `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. F32, F16 and BF16 tensors are read as f32.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::ModelError;
use crate::llama::LlamaConfig;

/// The safetensors files of a checkpoint, in memory, and which file holds which tensor.
#[derive(Debug)]
pub struct SafetensorsWeights {
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    index: BTreeMap<String, usize>,
}

fn io_error(path: &Path, error: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn format_error(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl SafetensorsWeights {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| io_error(&index_path, e))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| format_error(&index_path, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| format_error(&index_path, "no `weight_map` object"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            files
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
            let tensors =
                SafeTensors::deserialize(&bytes).map_err(|e| format_error(&path, e.to_string()))?;
            for tensor in tensors.names() {
                index.insert(tensor.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(SafetensorsWeights {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// The checkpoint folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor as f32, row-major, with its shape.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ModelError> {
        let &file = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.to_string(),
            })?;
        let (path, bytes) = &self.files[file];
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| format_error(path, e.to_string()))?;
        let view = tensors
            .tensor(name)
            .map_err(|e| format_error(path, e.to_string()))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok((view.shape().to_vec(), values))
    }
}

/// The architecture family a `config.json` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfArchitecture {
    Llama,
    Qwen2,
}

/// Reads a Llama-family `config.json` (`model_type` llama or qwen2).
pub fn llama_config_from_hf(path: &Path) -> Result<(HfArchitecture, LlamaConfig), ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| format_error(path, e.to_string()))?;
    let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
    let architecture = match model_type {
        "llama" => HfArchitecture::Llama,
        "qwen2" => HfArchitecture::Qwen2,
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: other.to_string(),
            });
        }
    };
    let int = |key: &str| -> Result<usize, ModelError> {
        json.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| {
                format_error(
                    path,
                    format!("`{key}` is missing or not a non-negative integer"),
                )
            })
    };
    check_supported(path, &json, architecture)?;
    let hidden_size = int("hidden_size")?;
    let num_heads = int("num_attention_heads")?;
    if num_heads == 0 || hidden_size == 0 {
        return Err(format_error(
            path,
            "`num_attention_heads` and `hidden_size` must be at least 1",
        ));
    }
    // transformers 5 moved `rope_theta` into `rope_parameters`.
    let rope_theta = json
        .get("rope_theta")
        .or_else(|| {
            json.get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
        })
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    if let Some(kind) = json
        .get("rope_parameters")
        .and_then(|p| p.get("rope_type"))
        .and_then(Value::as_str)
        && kind != "default"
    {
        return Err(format_error(
            path,
            format!("rope_type `{kind}` is not supported (default is)"),
        ));
    }
    let number = |key: &str, default: f64| -> Result<f64, ModelError> {
        match json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    format_error(path, format!("`{key}` = {v} must be a positive number"))
                }),
        }
    };
    let rms_norm_eps = number("rms_norm_eps", 1e-6)?;
    if !(rope_theta.is_finite() && rope_theta > 0.0) {
        return Err(format_error(
            path,
            format!("`rope_theta` = {rope_theta} must be a positive number"),
        ));
    }
    let tied_embeddings = match json.get("tie_word_embeddings") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format_error(
                path,
                format!("`tie_word_embeddings` = {other} must be true or false"),
            ));
        }
    };
    let num_kv_heads = int("num_key_value_heads").unwrap_or(num_heads);
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(format_error(
            path,
            format!(
                "`num_key_value_heads` = {num_kv_heads} must divide `num_attention_heads` = {num_heads}"
            ),
        ));
    }
    let config = LlamaConfig {
        vocab_size: int("vocab_size")?,
        hidden_size,
        num_layers: int("num_hidden_layers")?,
        num_heads,
        num_kv_heads,
        head_dim: int("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
        intermediate_size: int("intermediate_size")?,
        rope_theta,
        rms_norm_eps,
        tied_embeddings,
        max_positions: match json.get("max_position_embeddings") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .filter(|&n| n > 0)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        format_error(
                            path,
                            format!(
                                "`max_position_embeddings` is {value}, not a positive whole number"
                            ),
                        )
                    })?,
            ),
        },
    };
    Ok((architecture, config))
}

/// Refuses, by name, what config.json asks for and the Llama/Qwen2 code does not do: another
/// activation than SiLU, RoPE scaling, biases on Llama's projections, another norm.
fn check_supported(
    path: &Path,
    json: &Value,
    architecture: HfArchitecture,
) -> Result<(), ModelError> {
    let refuse = |message: String| Err(format_error(path, message));
    // transformers' default for both families is "silu" ("swish" is the same function).
    match json.get("hidden_act") {
        None | Some(Value::Null) => {}
        Some(Value::String(act)) if act == "silu" || act == "swish" => {}
        Some(other) => {
            return refuse(format!(
                "`hidden_act` = {other} is not supported (the Llama and Qwen2 code computes SiLU)"
            ));
        }
    }
    // transformers 4 names RoPE scaling `rope_scaling`; transformers 5 `rope_parameters`
    // (checked with `rope_theta`).
    match json.get("rope_scaling") {
        None | Some(Value::Null) => {}
        Some(scaling) => {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .map(Value::to_string)
                .unwrap_or_else(|| scaling.to_string());
            if kind != "\"default\"" {
                return refuse(format!(
                    "`rope_scaling` {kind} is not supported (plain RoPE is)"
                ));
            }
        }
    }
    if architecture == HfArchitecture::Llama {
        for key in ["attention_bias", "mlp_bias"] {
            if json.get(key).and_then(Value::as_bool) == Some(true) {
                return refuse(format!(
                    "`{key}` = true is not supported for Llama (its projections have no bias here)"
                ));
            }
        }
    }
    for key in ["pretraining_tp"] {
        if let Some(v) = json.get(key).and_then(Value::as_u64)
            && v != 1
        {
            return refuse(format!("`{key}` = {v} is not supported (1 is)"));
        }
    }
    Ok(())
}
