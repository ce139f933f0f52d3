//! # bapo-model: causal language models on Burn
//!
//! GGUF files ([`gguf`]), HF checkpoints ([`hf`]), the Llama family ([`llama`]) and GPT-2
//! ([`gpt2`]), all behind [`CausalModel`]. One non-generic implementation per
//! architecture: the device the weights are loaded on is the backend.

pub mod causal;
pub mod causal_lm;
pub mod chat;
pub mod export;
pub mod file_projections;
pub mod file_tables;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod hf;
pub mod hub;
pub mod llama;
pub mod llama_config;
pub mod loaded;
pub mod logprobs;
pub mod lora;
pub mod precision;
pub mod quantized;
pub mod recompute;
pub mod tokenizer;
pub mod walk;

use std::path::PathBuf;

pub use causal::{CausalModel, KvCache};
pub use causal_lm::{CausalLm, ModelConfig};
pub use chat::{ChatMessage, ChatTemplate};
pub use export::{export_gpt2_hf, export_hf, export_peft_adapter, export_tokenizer};
pub use generate::{GenerateError, Generation, GenerationConfig, Sampling, generate};
pub use gguf::{GgufError, GgufFile};
pub use gpt2::{Gpt2, Gpt2Config};
pub use llama::Llama;
pub use llama_config::{GgufFamily, HfArchitecture, LlamaConfig};
pub use loaded::{HfTokenizer, LoadedModel};
pub use logprobs::{
    AttentionPattern, BatchError, PromptGroup, ScoredLogits, ScoringLayout, SequenceLogprobs,
    SharedPromptBatch, TokenBatch, chunked_target_logprobs, scored_logits, scored_logits_shared,
    sequence_logprobs, shared_sequence_logprobs, target_logprobs,
};
pub use lora::{LoraError, LoraInit, LoraSettings, adapter_count, apply_lora};
pub use precision::Precision;
pub use quantized::{BaseQuantization, QuantizeError};
pub use recompute::BlockInputs;
pub use tokenizer::tokenizer_from_gguf;

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: no tensor named `{tensor}`")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error(
        "{path}: tensor `{tensor}` has dtype {dtype}, which is not supported (F32, F16, BF16 are)"
    )]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: architecture `{architecture}` is not supported (llama, qwen2 and gpt2 are)")]
    UnsupportedArchitecture { path: PathBuf, architecture: String },
    #[error(
        "{path}: GGUF architecture `{architecture}` is not supported: GGUF files of `llama` \
         (SmolLM2, Llama) and `qwen2` (Qwen2, Qwen2.5) load; `gpt2` loads from Hugging Face \
         folders (config.json and safetensors) only, for now"
    )]
    UnsupportedGgufArchitecture { path: PathBuf, architecture: String },
    #[error("lora.base_quantization")]
    Quantize(#[from] QuantizeError),
    #[error("tokenizing: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error(
        "{what} is {tokens} tokens, longer than the model's {max} positions \
         (max_position_embeddings): it was never trained past them; shorten it to at most {max}"
    )]
    TooLong {
        what: String,
        tokens: usize,
        max: usize,
    },
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}
