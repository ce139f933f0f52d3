//! The decoder blocks' projections of a frozen base kept in the GGUF file's own blocks
//! (`lora.base_quantization = "gguf"`): QLoRA on the file as it is. Each projection's weight
//! `[out, in]` stays in its Q4_K, Q6_K, Q8_0… blocks ([`BlockRows`]) and is dequantised where it
//! meets an input, one projection at a time — exactly the file's values (no second
//! quantisation), in the file's size (~4.9 bits a weight in a Q4_K_M file, against ~9 for
//! Burn's `q8` with its scales), and shared by every copy of the model (a clone shares the
//! blocks; burn-flex copies a quantized tensor's scales on every clone).
//!
//! The `Linear` keeps its place, its bias and its parameter path, so LoRA attaches to it as to
//! any other: its weight parameter holds a zero `[in, out]` placeholder (a broadcast view: no
//! memory), which is the frozen base's share of `base + scale·A·B`; the forward adds the
//! file's weight itself: `x·Wᵀ + bias + scale·(x·A)·B`. Autodiff sees the dequantised weight as
//! a constant, so gradients reach the adapter factors only.

use std::sync::Arc;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};

use crate::file_tables::whole;
use crate::gguf::BlockRows;
use crate::precision::Precision;

/// The file-held weights `[out, in]` of one block's projections, in the order its module
/// names them (attention: q, k, v, o; MLP: gate, up, down).
#[derive(Debug, Clone)]
pub struct FileProjections(pub Vec<Arc<BlockRows>>);

impl FileProjections {
    /// The weight of projection `index`.
    pub fn weight(&self, index: usize) -> &BlockRows {
        &self.0[index]
    }
}

/// The weight parameter of a projection held in the file: zeros `[in, out]` as a broadcast
/// view of one value (nothing allocated), frozen.
pub(crate) fn placeholder_weight(shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::<2>::zeros([1, 1], device).expand(shape)).set_require_grad(false)
}

/// `layer` applied to `x`: with its frozen weight from `file` when the file holds it (see the
/// module's docs; in f32, as every quantized base computes: runs refuse bf16 with one), as
/// `precision` projects otherwise.
pub(crate) fn project<const D: usize>(
    precision: Precision,
    layer: &Linear,
    file: Option<&BlockRows>,
    x: Tensor<D>,
) -> Tensor<D> {
    let Some(weight) = file else {
        return precision.project(layer, x);
    };
    let weight = whole(weight, &x.device());
    let bias = layer.bias.as_ref().map(Param::val);
    let base = linear(x.clone(), weight.transpose(), bias);
    match layer.weight.adapter() {
        None => base,
        Some(adapter) => {
            let down = linear(x, adapter.a.val(), None);
            base + linear(down, adapter.b.val(), None).mul_scalar(adapter.scale)
        }
    }
}

/// The effective weight `[in, out]` of `layer` (adapter merged) with its frozen part from
/// `file` where the file holds it: for an export.
pub(crate) fn merged_weight(layer: &Linear, file: Option<&BlockRows>) -> Tensor<2> {
    let update = layer.weight.val();
    match file {
        None => update,
        // The placeholder base is zero: `val()` is the adapter's update alone.
        Some(weight) => whole(weight, &update.device()).transpose() + update,
    }
}
