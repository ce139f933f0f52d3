//! LoRA on chosen projections, with Burn's built-in adapters: `Module::apply_lora` freezes
//! every base parameter and attaches trainable low-rank factors (`base + α/r · A·B`, `B = 0`
//! at the start) to the 2-D weights whose module path matches a regular expression.
//!
//! The LoRA-disabled model — the frozen base weights, i.e. the model before fine-tuning — is
//! what DPO-style objectives use as their reference: `without_adapters()` on each model gives
//! it without a second copy of the weights (the base tensors are shared, not cloned).

use burn::module::{Module, Param, ParamGroup};
use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor};

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
    /// How the first factor A is drawn (B starts at zero either way).
    #[serde(skip_serializing_if = "LoraInit::is_gaussian")]
    pub init: LoraInit,
}

/// The distribution of the first factor A `[in, r]` at the start; the second, B, is zero,
/// so the model starts as its base whichever is chosen. A's scale sets how much each step of
/// B moves the model: the two differ by ~5× at SmolLM2's width (0.125 against 0.024).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// Normal with mean 0 and standard deviation 1/r: Burn's, and PEFT's
    /// `init_lora_weights = "gaussian"` (the default here, so that runs made before this
    /// choice existed stay as they were).
    #[default]
    Gaussian,
    /// U(−1/√in, 1/√in): PEFT's default (`init_lora_weights = True`, `kaiming_uniform_` with
    /// a = √5 on its `lora_A`), what a PEFT or TRL recipe's learning rate was tuned with.
    KaimingUniform,
}

impl LoraInit {
    /// Whether this is the default, which a config leaves unwritten.
    pub fn is_gaussian(&self) -> bool {
        *self == LoraInit::Gaussian
    }
}

impl Default for LoraSettings {
    /// Rank 8, α 16, the attention projections of the Llama family (PEFT's usual q/k/v/o).
    fn default() -> Self {
        LoraSettings {
            rank: 8,
            alpha: 16.0,
            target: r"attention\.(q|k|v|o)_proj\.weight$".to_string(),
            init: LoraInit::Gaussian,
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
    let model = model.apply_lora(lora);
    Ok(match settings.init {
        LoraInit::Gaussian => model,
        LoraInit::KaimingUniform => map_with_paths(model, &mut KaimingUniformA),
    })
}

/// Redraws every adapter's A `[in, r]` from U(−1/√in, 1/√in), from the device's generator
/// as Burn's own draw is.
struct KaimingUniformA;

impl PathMapper for KaimingUniformA {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        if !path.ends_with(&["lora", "a"]) {
            return param;
        }
        param.map(|a| {
            let bound = 1.0 / (a.dims()[0] as f64).sqrt();
            let drawn =
                Tensor::<D>::random(a.shape(), Distribution::Uniform(-bound, bound), &a.device())
                    .cast(a.dtype());
            if a.is_require_grad() {
                drawn.require_grad()
            } else {
                drawn
            }
        })
    }
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
