//! Mixed precision: which float type a model's forward computes in.
//!
//! `Precision::F32` is the model as loaded: every operation in f32 (Burn's own layers, the
//! path every backend's agreement is measured on). `Precision::Bf16` is what
//! `torch.autocast(dtype=torch.bfloat16)` does to transformers' eager models, with the
//! weights (the master copy the optimizer updates) left in f32:
//! - matrix products — every projection, the LM head, attention's `q·kᵀ` and `p·v`, LoRA's
//!   two factors — take bf16 inputs and give a bf16 result (autocast's lower-precision list);
//! - the residual stream stays f32 (in transformers the f32 embedding plus a bf16 block output
//!   promotes to f32), so RMSNorm / LayerNorm statistics, RoPE, attention's softmax and
//!   everything after the LM head — log-softmax, the sequence log-probs, the loss — are f32;
//! - LoRA's update is added as PEFT adds it, `x·W + scale·(x·A)·B` in bf16, rather than
//!   through a merged `W + scale·A·B`, whose bf16 rounding would swallow a small update.
//!
//! Burn has no autocast, and on Flex an f32 tensor meets a bf16 one only through an explicit
//! cast (the op panics otherwise), so the architectures call the functions below at each of
//! those places. The casts are differentiable (their gradient is cast back), so gradients reach
//! the f32 weights as f32.

use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Tensor};

/// A float format of the model: what it computes its matrix products in
/// (`training.precision`), or what a frozen LoRA base's matrices are held in
/// (`lora.base_dtype`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Precision {
    /// f32.
    #[default]
    #[serde(rename = "f32")]
    F32,
    /// bf16: as compute, bf16 matrix products over f32 weights (norms, softmax and log-probs
    /// in f32); as a base's storage, its matrices in bf16.
    #[serde(rename = "bf16")]
    Bf16,
}

impl Precision {
    /// Whether this is f32 (the default, which configs and fingerprints leave out where the
    /// key came later).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The float type of matrix products.
    fn matmul_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// `x` in the matrix-product type.
    pub(crate) fn for_matmul<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        to_dtype(x, self.matmul_dtype())
    }

    /// `linear` applied to `x`. In f32, Burn's own `Linear::forward` (a LoRA adapter merged
    /// into the weight); in bf16 the base weight, the bias and each LoRA factor meet `x` in
    /// bf16 and the result is bf16.
    pub(crate) fn project<const D: usize>(self, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
        match self {
            Precision::F32 => layer.forward(x),
            Precision::Bf16 => {
                let x = self.for_matmul(x);
                let bias = layer.bias.as_ref().map(|b| self.for_matmul(b.val()));
                let base = linear(x.clone(), self.for_matmul(layer.weight.base()), bias);
                match layer.weight.adapter() {
                    None => base,
                    Some(adapter) => {
                        let down = linear(x, self.for_matmul(adapter.a.val()), None);
                        let up = linear(down, self.for_matmul(adapter.b.val()), None);
                        base + up.mul_scalar(adapter.scale)
                    }
                }
            }
        }
    }

    /// Logits from final hidden states and an LM head's weight `[width, vocab]`: the product
    /// in this precision, the result always f32 (log-softmax and everything after it run in
    /// f32, as autocast runs `log_softmax`).
    pub(crate) fn head_logits<const D: usize>(
        self,
        hidden: Tensor<D>,
        weight: Tensor<2>,
    ) -> Tensor<D> {
        to_f32(linear(
            self.for_matmul(hidden),
            self.for_matmul(weight),
            None,
        ))
    }
}

/// `x` as f32 (the residual stream, norms, softmax); unchanged when it already is.
pub(crate) fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    to_dtype(x, FloatDType::F32)
}

/// `x` in `dtype`, without a cast (and its autodiff node) when it already is.
fn to_dtype<const D: usize>(x: Tensor<D>, dtype: FloatDType) -> Tensor<D> {
    if x.dtype() == DType::from(dtype) {
        x
    } else {
        x.cast(dtype)
    }
}
