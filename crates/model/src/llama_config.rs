//! The shape and numerics of a Llama-family model (`LlamaConfig`), read from a GGUF file's
//! metadata or a Hugging Face `config.json`, and checked once for both.

use std::path::Path;

use serde_json::Value;

use crate::ModelError;
use crate::gguf::GgufFile;
use crate::hf::{format_error, io_error};

/// Shape and numerics of a Llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tied_embeddings: bool,
    /// The longest sequence the model was made for (`max_position_embeddings`, GGUF's
    /// `llama.context_length`), when the file says.
    pub max_positions: Option<usize>,
}

/// The Llama-family architectures a GGUF file can hold, by llama.cpp's name
/// (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufFamily {
    /// `llama`: SmolLM2, Llama.
    Llama,
    /// `qwen2`: Qwen2, Qwen2.5 (biases on q/k/v).
    Qwen2,
}

impl GgufFamily {
    /// The file's architecture, or an error naming it when it is not of the family.
    pub fn of(file: &GgufFile) -> Result<Self, ModelError> {
        match file.get_str("general.architecture")? {
            "llama" => Ok(GgufFamily::Llama),
            "qwen2" => Ok(GgufFamily::Qwen2),
            other => Err(ModelError::UnsupportedGgufArchitecture {
                path: file.path.clone(),
                architecture: other.to_string(),
            }),
        }
    }

    /// The prefix of the architecture's metadata keys (`qwen2.block_count`).
    fn key_prefix(self) -> &'static str {
        match self {
            GgufFamily::Llama => "llama",
            GgufFamily::Qwen2 => "qwen2",
        }
    }

    /// Whether llama.cpp's converter permuted the rows of `attn_q` and `attn_k`: it does for
    /// `llama`, whose GGUF RoPE rotates interleaved pairs, and not for `qwen2`, whose RoPE
    /// rotates halves as transformers' does (llama.cpp's NEOX mode).
    pub fn permutes_qk(self) -> bool {
        self == GgufFamily::Llama
    }
}

impl LlamaConfig {
    /// Reads the `llama.*` or `qwen2.*` metadata of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let prefix = GgufFamily::of(file)?.key_prefix();
        let key = |k: &str| format!("{prefix}.{k}");
        let hidden_size = file.get_u64(&key("embedding_length"))? as usize;
        let num_heads = file.get_u64(&key("attention.head_count"))? as usize;
        let num_kv_heads = file
            .get_u64(&key("attention.head_count_kv"))
            .map_or(num_heads, |v| v as usize);
        let (vocab_shape, _) = (file.info("token_embd.weight")?.shape(), ());
        Ok(LlamaConfig {
            vocab_size: vocab_shape[0],
            hidden_size,
            num_layers: file.get_u64(&key("block_count"))? as usize,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size / num_heads.max(1),
            intermediate_size: file.get_u64(&key("feed_forward_length"))? as usize,
            rope_theta: file.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rms_norm_eps: file.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            tied_embeddings: !file.has_tensor("output.weight"),
            max_positions: file
                .get_u64(&key("context_length"))
                .ok()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        })
    }
}

impl LlamaConfig {
    /// Refuses a shape the model code cannot build, whichever file it came from: a size of
    /// 0, heads that do not group, an odd head size (RoPE rotates pairs), or a weight with
    /// more values than can be counted.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocabulary size", self.vocab_size),
            ("hidden size", self.hidden_size),
            ("layer count", self.num_layers),
            ("attention head count", self.num_heads),
            ("key/value head count", self.num_kv_heads),
            ("head size", self.head_dim),
            ("intermediate size", self.intermediate_size),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return Err(format!("the {what} is 0"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "{} key/value heads do not divide {} attention heads",
                self.num_kv_heads, self.num_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "the head size {} is odd (RoPE rotates pairs of values)",
                self.head_dim
            ));
        }
        let query_rows = self.num_heads.checked_mul(self.head_dim);
        let weights = [
            (
                "the token embedding",
                self.vocab_size.checked_mul(self.hidden_size),
            ),
            (
                "a query projection",
                query_rows.and_then(|r| r.checked_mul(self.hidden_size)),
            ),
            (
                "an MLP projection",
                self.hidden_size.checked_mul(self.intermediate_size),
            ),
        ];
        if let Some((what, _)) = weights.iter().find(|(_, n)| n.is_none()) {
            return Err(format!("{what} would have more values than can be counted"));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "the RMSNorm epsilon {} must be a positive number",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "the RoPE base {} must be a positive number",
                self.rope_theta
            ));
        }
        Ok(())
    }
}

/// The architecture family a `config.json` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfArchitecture {
    Llama,
    Qwen2,
}

impl LlamaConfig {
    /// Reads a Llama-family `config.json` (`model_type` llama or qwen2).
    pub fn from_hf(path: &Path) -> Result<(HfArchitecture, LlamaConfig), ModelError> {
        let json = read_config_json(path)?;
        let hf = HfJson { path, json: &json };
        let architecture = hf.architecture()?;
        check_supported(path, &json, architecture)?;
        let (hidden_size, num_heads) = hf.hidden_size_and_heads()?;
        let rope_theta = hf.rope_theta()?;
        let rms_norm_eps = hf.positive_number("rms_norm_eps", 1e-6)?;
        hf.check_rope_theta(rope_theta)?;
        let tied_embeddings = hf.tied_embeddings()?;
        let num_kv_heads = hf.num_kv_heads(num_heads)?;
        let config = LlamaConfig {
            vocab_size: hf.int("vocab_size")?,
            hidden_size,
            num_layers: hf.int("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim: hf.int("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
            intermediate_size: hf.int("intermediate_size")?,
            rope_theta,
            rms_norm_eps,
            tied_embeddings,
            max_positions: hf.max_positions()?,
        };
        Ok((architecture, config))
    }
}

/// Reads and parses a `config.json` file.
fn read_config_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| format_error(path, e.to_string()))
}

/// A parsed `config.json` and its path, read key by key with errors that name the file.
struct HfJson<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl HfJson<'_> {
    /// The family named by `model_type`, refusing any other than llama and qwen2.
    fn architecture(&self) -> Result<HfArchitecture, ModelError> {
        let model_type = self
            .json
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match model_type {
            "llama" => Ok(HfArchitecture::Llama),
            "qwen2" => Ok(HfArchitecture::Qwen2),
            other => Err(ModelError::UnsupportedArchitecture {
                path: self.path.to_path_buf(),
                architecture: other.to_string(),
            }),
        }
    }

    /// A required non-negative integer.
    fn int(&self, key: &str) -> Result<usize, ModelError> {
        self.json
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| {
                format_error(
                    self.path,
                    format!("`{key}` is missing or not a non-negative integer"),
                )
            })
    }

    /// An optional positive number, `default` when absent or null.
    fn positive_number(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| {
                    format_error(
                        self.path,
                        format!("`{key}` = {v} must be a positive number"),
                    )
                }),
        }
    }

    /// `hidden_size` and `num_attention_heads`, refusing 0 for either.
    fn hidden_size_and_heads(&self) -> Result<(usize, usize), ModelError> {
        let hidden_size = self.int("hidden_size")?;
        let num_heads = self.int("num_attention_heads")?;
        if num_heads == 0 || hidden_size == 0 {
            return Err(format_error(
                self.path,
                "`num_attention_heads` and `hidden_size` must be at least 1",
            ));
        }
        Ok((hidden_size, num_heads))
    }

    /// The RoPE base (10 000 by default, not yet range-checked), refusing a `rope_type`
    /// other than default.
    fn rope_theta(&self) -> Result<f64, ModelError> {
        let json = self.json;
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
                self.path,
                format!("rope_type `{kind}` is not supported (default is)"),
            ));
        }
        Ok(rope_theta)
    }

    /// Refuses a RoPE base that is not a positive number.
    fn check_rope_theta(&self, rope_theta: f64) -> Result<(), ModelError> {
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(format_error(
                self.path,
                format!("`rope_theta` = {rope_theta} must be a positive number"),
            ));
        }
        Ok(())
    }

    /// `tie_word_embeddings`: false when absent or null, else it must be a boolean.
    fn tied_embeddings(&self) -> Result<bool, ModelError> {
        match self.json.get("tie_word_embeddings") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format_error(
                self.path,
                format!("`tie_word_embeddings` = {other} must be true or false"),
            )),
        }
    }

    /// `num_key_value_heads` (`num_heads` by default), which must divide `num_heads`.
    fn num_kv_heads(&self, num_heads: usize) -> Result<usize, ModelError> {
        let num_kv_heads = self.int("num_key_value_heads").unwrap_or(num_heads);
        if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(format_error(
                self.path,
                format!(
                    "`num_key_value_heads` = {num_kv_heads} must divide `num_attention_heads` = {num_heads}"
                ),
            ));
        }
        Ok(num_kv_heads)
    }

    /// `max_position_embeddings` if present, which must then be a positive whole number.
    fn max_positions(&self) -> Result<Option<usize>, ModelError> {
        match self.json.get("max_position_embeddings") {
            None => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    format_error(
                        self.path,
                        format!(
                            "`max_position_embeddings` is {value}, not a positive whole number"
                        ),
                    )
                }),
        }
    }
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
    // transformers' Qwen2 attends within a window on its upper layers when this is on; the
    // code here attends to every position (issue #26: it was ignored).
    if json.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return refuse(
            "`use_sliding_window` = true is not supported (every layer attends to all positions here)"
                .into(),
        );
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
