//! LoRA on chosen projections, with Burn's built-in adapters: `Module::apply_lora` freezes
//! every base parameter and attaches trainable low-rank factors (`base + α/r · A·B`, `B = 0`
//! at the start) to the 2-D weights whose module path matches a regular expression.
//!
//! The LoRA-disabled model — the frozen base weights, i.e. the model before fine-tuning — is
//! what DPO-style objectives use as their reference: `without_adapters()` on each model gives
//! it without a second copy of the weights (the base tensors are shared, not cloned).

use burn::module::{Module, Param, ParamGroup};
use burn::nn::Linear;
use burn::tensor::Tensor;

use crate::walk::{ParamPath, PathMapper, map_with_paths};

/// Which projections get adapters, and their shape (a run config's `[lora]` holds them).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoraSettings {
    /// Rank r of the factors.
    pub rank: usize,
    /// α: the update is scaled by α / r (PEFT's convention).
    pub alpha: f64,
    /// A regular expression over module paths such as `layers.3.attention.q_proj.weight`;
    /// only 2-D weights that match are adapted.
    pub target: String,
}

impl Default for LoraSettings {
    /// Rank 8, α 16, the attention projections of the Llama family (PEFT's usual q/k/v/o).
    fn default() -> Self {
        LoraSettings {
            rank: 8,
            alpha: 16.0,
            target: r"attention\.(q|k|v|o)_proj\.weight$".to_string(),
        }
    }
}

impl LoraSettings {
    /// Checks the settings without a model (a run config checks them before loading one);
    /// returns the parameter group the target selects.
    pub fn check(&self) -> Result<ParamGroup, LoraError> {
        if self.rank == 0 {
            return Err(LoraError::Rank);
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(LoraError::Alpha(self.alpha));
        }
        ParamGroup::from_regex(&self.target).map_err(|e| {
            let burn::module::ParamGroupError::InvalidPatternError(text) = e;
            // The regex crate's message ends with the cause ("error: unclosed group"); its
            // other lines draw a caret under the pattern, which a one-line message cannot.
            let cause = text
                .lines()
                .last()
                .map(|l| l.trim().trim_start_matches("error: ").to_string())
                .unwrap_or(text.clone());
            LoraError::Target {
                pattern: self.target.clone(),
                message: cause,
            }
        })
    }
}

/// A LoRA setting that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoraError {
    #[error("LoRA rank must be at least 1")]
    Rank,
    #[error("LoRA alpha {0} must be a finite number > 0")]
    Alpha(f64),
    #[error("LoRA target `{pattern}` is not a valid regular expression: {message}")]
    Target { pattern: String, message: String },
}

/// Attaches LoRA adapters to the matching weights of `model`; every other parameter is
/// frozen.
pub fn apply_lora<M: Module>(model: M, settings: &LoraSettings) -> Result<M, LoraError> {
    let group = settings.check()?;
    // The factors (what the optimizer updates) are f32 also over a base held in bf16.
    let lora = burn::module::Lora::new(settings.rank, settings.alpha)
        .set_param_group(group)
        .set_dtype(burn::tensor::FloatDType::F32);
    Ok(model.apply_lora(lora))
}

/// Number of adapted weights in a module (Burn surfaces each adapter's factors as parameters
/// at `<weight path>.lora.a` and `.lora.b`).
pub fn adapter_count<M: Module>(model: &M) -> usize {
    let mut counter = CountAdapters { count: 0 };
    let _ = map_with_paths(model.clone(), &mut counter);
    counter.count
}

struct CountAdapters {
    count: usize,
}

impl PathMapper for CountAdapters {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        if path.ends_with(&["lora", "a"]) {
            self.count += 1;
        }
        param
    }
}

/// A linear layer with its adapter switched off: the frozen base weight (the same tensor, not
/// a copy) and the bias.
pub fn linear_without_adapter(linear: &Linear) -> Linear {
    Linear {
        weight: Param::from_tensor(linear.weight.base()).set_require_grad(false),
        bias: linear.bias.clone(),
    }
}
