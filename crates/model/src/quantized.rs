//! A frozen base held quantized under LoRA (`lora.base_quantization`, QLoRA without
//! bitsandbytes). `Gguf` keeps a GGUF file's own blocks (`crate::file_projections`); `Q8` and
//! `Q4`, this module: every projection matrix of the decoder blocks is stored as Burn quantized
//! tensors — blocks of 32 values along the input dimension (as GGUF blocks run), symmetric,
//! one f32 scale per block, 8 or 4 bits of precision a value (each held in a byte by
//! burn-flex 0.22.1, so `q4` saves no memory over `q8` there) — and dequantised where it meets an input,
//! one projection at a time. Under autodiff the dequantised weight is a leaf without gradient
//! (burn-autodiff's `dequantize`), so gradients reach the LoRA factors only.
//!
//! What is not quantized here: the token embedding and a separate LM head — from a GGUF file
//! kept frozen in the file's own blocks (`crate::file_tables`), from a checkpoint folder in
//! f32 — and the norms and biases, in f32. The values are Burn's quantisation of the f32
//! weights the model file gives — for a GGUF file, of its dequantised blocks: not the file's
//! own blocks, and so a base slightly different from the file's (docs/model.md measures how
//! much).
//!
//! The backends: Flex (`cpu`) has quantized tensors; burn-tch (`tch-cpu`, `cuda`) implements
//! none of their operations; cubecl (`wgpu`) quantizes only in blocks along a tensor's last
//! dimension, and with the weight transposed to make them so, a LoRA step ran at a tiny shape
//! but panicked inside cubecl at Qwen2.5-1.5B's on an H200 (docs/performance.md). Run configs
//! refuse all but `cpu`.

use burn::module::{Module, Param};
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::walk::{ParamPath, PathMapper, map_with_paths};

/// Values per quantization block, along a matrix's input dimension.
pub const BLOCK: usize = 32;

/// How LoRA's frozen base is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseQuantization {
    /// As the model file gives it, dequantised (f32, or bf16 with `lora.base_dtype`).
    #[default]
    None,
    /// 8 bits a value, an f32 scale per block of 32: ~1.1 bytes a value.
    Q8,
    /// 4 bits of precision a value, an f32 scale per block of 32. Held in as much memory as
    /// `Q8` on Flex: burn-flex 0.22.1 stores every quantized value in a byte (`QuantStore::
    /// Native`), whatever store the scheme asks for.
    Q4,
    /// A GGUF file's own blocks, as the file has them (`crate::file_projections`): exactly
    /// the file's values, in the file's size. GGUF files only.
    Gguf,
}

impl BaseQuantization {
    pub fn is_none(&self) -> bool {
        *self == BaseQuantization::None
    }

    /// Burn's scheme for it (none for `None`).
    fn scheme(self) -> Option<QuantScheme> {
        let value = match self {
            BaseQuantization::None | BaseQuantization::Gguf => return None,
            BaseQuantization::Q8 => QuantValue::Q8S,
            BaseQuantization::Q4 => QuantValue::Q4S,
        };
        // Burn stores a linear weight `[in, out]`: blocks of 32 rows by 1 column run along the
        // input dimension.
        Some(
            QuantScheme::default()
                .with_value(value)
                .with_store(QuantStore::PackedU32(0))
                .per_block([BLOCK as u8, 1], ScaleDtype::F32),
        )
    }
}

/// A matrix that cannot be cut into blocks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "`{path}` is [{rows}, {cols}] (input × output): its input size is not a multiple of the \
     quantization block ({BLOCK}), so its base cannot be held quantized"
)]
pub struct QuantizeError {
    pub path: String,
    pub rows: usize,
    pub cols: usize,
}

/// `model` (a Llama or a GPT-2) with every projection matrix of its decoder blocks held
/// quantized and frozen (see the module's docs); `None` leaves it as it is.
pub(crate) fn quantize_block_matrices<M: Module>(
    model: M,
    quantization: BaseQuantization,
) -> Result<M, QuantizeError> {
    let Some(scheme) = quantization.scheme() else {
        return Ok(model);
    };
    let mut mapper = BlockMatrices {
        scheme,
        error: None,
    };
    let model = map_with_paths(model, &mut mapper);
    match mapper.error {
        Some(error) => Err(error),
        None => Ok(model),
    }
}

/// Quantizes and freezes the 2-D weights inside the decoder blocks (`layers.N.…` of the
/// Llama family, `blocks.N.…` of GPT-2); remembers the first that cannot be.
struct BlockMatrices {
    scheme: QuantScheme,
    error: Option<QuantizeError>,
}

impl PathMapper for BlockMatrices {
    fn map_float<const D: usize>(
        &mut self,
        path: &ParamPath,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        // Already quantized (by the loader, `LoadedModel::open_quantized`): kept as it is, in
        // whichever scheme it was given; a quantized tensor is never quantized again.
        let quantized = matches!(param.dtype(), DType::QFloat(_));
        let in_a_block = matches!(path.first(), Some("layers" | "blocks"));
        if D != 2 || !in_a_block || self.error.is_some() || quantized {
            return param;
        }
        let dims = param.shape().to_vec();
        if let Err(error) = check_blocks(&path.dotted(), [dims[0], dims[1]]) {
            self.error = Some(error);
            return param;
        }
        let scheme = self.scheme;
        param
            .map(|t| t.detach().quantize_dynamic(&scheme))
            .set_require_grad(false)
    }
}

/// Whether a `[rows, cols]` (input × output) matrix cuts into blocks along its input.
fn check_blocks(path: &str, [rows, cols]: [usize; 2]) -> Result<(), QuantizeError> {
    if rows.is_multiple_of(BLOCK) {
        Ok(())
    } else {
        Err(QuantizeError {
            path: path.to_string(),
            rows,
            cols,
        })
    }
}

/// `weight` (`[in, out]`, the matrix of the projection at `path`) held as `quantization` says
/// and frozen, as a model loader builds it (so that the f32 model never exists whole).
pub(crate) fn quantize_matrix(
    weight: Tensor<2>,
    quantization: BaseQuantization,
    path: &str,
) -> Result<Param<Tensor<2>>, QuantizeError> {
    let Some(scheme) = quantization.scheme() else {
        return Ok(Param::from_tensor(weight));
    };
    check_blocks(path, weight.dims())?;
    Ok(Param::from_tensor(weight.quantize_dynamic(&scheme)).set_require_grad(false))
}
