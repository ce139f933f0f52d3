//! `CausalLm`, the model a checkpoint turns out to be (Llama family or GPT-2), with the
//! `ModelConfig` of its shape.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Gradients, Int, Tensor};

use crate::ModelError;
use crate::causal::{CausalModel, KvCache};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::llama::{Llama, LlamaConfig};
use crate::logprobs::ScoringLayout;
use crate::precision::Precision;
use crate::quantized::{BaseQuantization, QuantizeError, quantize_block_matrices};
use crate::recompute::{BlockInputs, backward_through_blocks, forward_keeping_block_inputs};

/// The shape of a loaded model, kept with it: export writes it back, and checks read its
/// limits.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
}

impl ModelConfig {
    /// Rows of the token embedding.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
            ModelConfig::Gpt2(c) => c.vocab_size,
        }
    }

    /// The longest sequence the model was made for, when its file says.
    pub fn max_positions(&self) -> Option<usize> {
        match self {
            ModelConfig::Llama(c) => c.max_positions,
            ModelConfig::Gpt2(c) => Some(c.max_positions),
        }
    }
}

/// A model of any supported architecture.
#[derive(Module, Debug)]
pub enum CausalLm {
    Llama(Llama),
    Gpt2(Gpt2),
}

impl CausalLm {
    /// This model with every projection matrix of its decoder blocks held quantized and
    /// frozen (bapo-model's `quantized` module); `None` leaves it as it is, and so does
    /// `Gguf`, which only reading a GGUF file gives (`LoadedModel::open_quantized`).
    pub fn with_quantized_matrices(
        self,
        quantization: BaseQuantization,
    ) -> Result<CausalLm, QuantizeError> {
        Ok(match self {
            CausalLm::Llama(m) => CausalLm::Llama(quantize_block_matrices(m, quantization)?),
            CausalLm::Gpt2(m) => CausalLm::Gpt2(quantize_block_matrices(m, quantization)?),
        })
    }

    /// Loads a Hugging Face checkpoint folder; `config.json`'s `model_type` picks the
    /// architecture (llama, qwen2, gpt2).
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<(Self, ModelConfig), ModelError> {
        Self::from_hf_dir_quantized(dir, device, BaseQuantization::None)
    }

    /// [`from_hf_dir`](Self::from_hf_dir) with the decoder blocks' projections held as
    /// `quantization` says: a Llama's or Qwen2's as each is read (the f32 model never exists
    /// whole), a GPT-2's once loaded (its checkpoint stores fused, transposed projections).
    pub fn from_hf_dir_quantized(
        dir: &Path,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<(Self, ModelConfig), ModelError> {
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| ModelError::Io {
            path: config.clone(),
            message: e.to_string(),
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Format {
                path: config.clone(),
                message: e.to_string(),
            })?;
        if quantization == BaseQuantization::Gguf {
            return Err(crate::llama::not_a_gguf_file(dir));
        }
        if json.get("model_type").and_then(serde_json::Value::as_str) == Some("gpt2") {
            let (model, config) = Gpt2::from_hf_dir(dir, device)?;
            let model = quantize_block_matrices(model, quantization)?;
            Ok((CausalLm::Gpt2(model), ModelConfig::Gpt2(config)))
        } else {
            let (model, config) = Llama::from_hf_dir_quantized(dir, device, quantization)?;
            Ok((CausalLm::Llama(model), ModelConfig::Llama(config)))
        }
    }

    /// Writes this model (LoRA adapters merged) as a transformers checkpoint of `config`'s
    /// shape.
    pub fn export_hf(&self, config: &ModelConfig, dir: &Path) -> Result<(), ModelError> {
        match (self, config) {
            (CausalLm::Llama(m), ModelConfig::Llama(c)) => crate::export::export_hf(m, c, dir),
            (CausalLm::Gpt2(m), ModelConfig::Gpt2(c)) => crate::export::export_gpt2_hf(m, c, dir),
            _ => Err(ModelError::Format {
                path: dir.to_path_buf(),
                message: "the model and its config are of different architectures".into(),
            }),
        }
    }
}

impl CausalLm {
    /// This model with every LoRA adapter switched off, sharing the base weights.
    pub fn without_adapters(&self) -> CausalLm {
        match self {
            CausalLm::Llama(m) => CausalLm::Llama(m.without_adapters()),
            CausalLm::Gpt2(m) => CausalLm::Gpt2(m.without_adapters()),
        }
    }

    /// For an LM head held frozen in a file's blocks ([`Llama::frozen_head_gradient`]): the
    /// gradient with respect to `rows` `[n, width]` of `Σ_t weights_t · log p_t(targets_t)`;
    /// `None` for a head held as parameters (autodiff computes it).
    pub fn frozen_head_gradient(
        &self,
        rows: Tensor<2>,
        targets: &[u32],
        weights: Tensor<1>,
    ) -> Option<Tensor<2>> {
        match self {
            CausalLm::Llama(m) => m.frozen_head_gradient(rows, targets, weights),
            CausalLm::Gpt2(_) => None,
        }
    }
}

/// Mixed precision (see `precision.rs`).
impl CausalLm {
    /// What this model's forward computes in.
    pub fn precision(&self) -> Precision {
        match self {
            CausalLm::Llama(m) => m.precision,
            CausalLm::Gpt2(m) => m.precision,
        }
    }

    /// This model computing in `precision`; its weights are unchanged.
    pub fn with_precision(self, precision: Precision) -> CausalLm {
        match self {
            CausalLm::Llama(m) => CausalLm::Llama(Llama { precision, ..m }),
            CausalLm::Gpt2(m) => CausalLm::Gpt2(Gpt2 { precision, ..m }),
        }
    }

    /// This model with every matrix (projections, embeddings, LM head) held in bf16 and frozen,
    /// norms and biases kept in f32: the frozen base of LoRA in half the memory
    /// (`lora.base_dtype = "bf16"`). It computes in bf16 (an f32 product cannot take a bf16
    /// weight). LoRA's factors attached afterwards are f32 ([`apply_lora`](crate::apply_lora)
    /// builds them so).
    pub fn with_bf16_matrices(self) -> CausalLm {
        let mut mapper = MatricesToBf16;
        let model = match self {
            CausalLm::Llama(m) => CausalLm::Llama(m.map(&mut mapper)),
            CausalLm::Gpt2(m) => CausalLm::Gpt2(m.map(&mut mapper)),
        };
        model.with_precision(Precision::Bf16)
    }
}

/// Casts every 2-D float parameter to bf16 and freezes it.
struct MatricesToBf16;

impl ModuleMapper for MatricesToBf16 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 2 {
            return param;
        }
        param
            .map(|t| t.detach().cast(FloatDType::BF16))
            .set_require_grad(false)
    }
}

/// Activation recomputation (see `recompute.rs`).
impl CausalLm {
    /// The final hidden states `[rows, tokens, width]` of `layout` on `device`, from this
    /// plain (`valid()`) module, and the block inputs a recomputing backward needs.
    pub fn forward_keeping_block_inputs(
        &self,
        layout: &ScoringLayout,
        device: &Device,
    ) -> (Tensor<3>, BlockInputs) {
        let ids = layout.ids_tensor(device);
        match self {
            CausalLm::Llama(m) => forward_keeping_block_inputs(m, ids, &layout.attention),
            CausalLm::Gpt2(m) => forward_keeping_block_inputs(m, ids, &layout.attention),
        }
    }

    /// Back-propagates `grad_hidden` (plain, the gradient at the final hidden states) through
    /// this module on the autodiff `device`, recomputing one block at a time from `inputs`,
    /// `rows_per_pass` rows at a time (0: all); each stage's gradients go to `sink`.
    pub fn backward_through_blocks(
        &self,
        layout: &ScoringLayout,
        device: &Device,
        inputs: BlockInputs,
        grad_hidden: Tensor<3>,
        rows_per_pass: usize,
        sink: &mut dyn FnMut(Gradients),
    ) {
        let ids = layout.ids_tensor(device);
        let attention = &layout.attention;
        match self {
            CausalLm::Llama(m) => {
                backward_through_blocks(m, ids, attention, inputs, grad_hidden, rows_per_pass, sink)
            }
            CausalLm::Gpt2(m) => {
                backward_through_blocks(m, ids, attention, inputs, grad_hidden, rows_per_pass, sink)
            }
        }
    }
}

impl CausalModel for CausalLm {
    fn hidden_states(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match self {
            CausalLm::Llama(m) => m.hidden_states(ids),
            CausalLm::Gpt2(m) => m.hidden_states(ids),
        }
    }

    fn hidden_states_cached(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        match self {
            CausalLm::Llama(m) => m.hidden_states_cached(ids, positions, mask, cache),
            CausalLm::Gpt2(m) => m.hidden_states_cached(ids, positions, mask, cache),
        }
    }

    fn hidden_states_masked(
        &self,
        ids: Tensor<2, Int>,
        positions: &[Vec<usize>],
        mask: Vec<bool>,
    ) -> Tensor<3> {
        match self {
            CausalLm::Llama(m) => m.hidden_states_masked(ids, positions, mask),
            CausalLm::Gpt2(m) => m.hidden_states_masked(ids, positions, mask),
        }
    }

    fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match self {
            CausalLm::Llama(m) => m.logits(hidden),
            CausalLm::Gpt2(m) => m.logits(hidden),
        }
    }

    fn target_logprobs_of_rows(&self, rows: Tensor<2>, targets: &[u32]) -> Tensor<1> {
        match self {
            CausalLm::Llama(m) => m.target_logprobs_of_rows(rows, targets),
            CausalLm::Gpt2(m) => m.target_logprobs_of_rows(rows, targets),
        }
    }
}
