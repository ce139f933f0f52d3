//! Activation recomputation per decoder block ("gradient checkpointing" in transformers and
//! TRL): the forward keeps only each block's input, and the backward runs one block at a
//! time, recomputing it from its saved input with autodiff and back-propagating the gradient
//! that arrived at its output.
//!
//! Burn's own checkpointing (`GradientCheckpointingStrategy::Balanced`) recomputes
//! element-wise operations only and still saves every matrix product's input, so block
//! recomputation is built here from public pieces: a forward on the plain module
//! (`Module::valid()`, no graph), then for each block, last first, a fresh autodiff forward
//! from its input made a leaf, and a backward of `Σ output · upstream gradient`, whose
//! gradient with respect to the leaf is the next block's upstream gradient. Peak memory holds
//! one block's graph plus `blocks + 1` hidden-state tensors, instead of every block's graph;
//! recomputing a few rows at a time (`training.recompute_chunk_rows`), one block's graph for
//! those rows only.

use std::ops::Range;

use burn::tensor::{Gradients, Int, Tensor};

use crate::logprobs::AttentionPattern;

/// A forward pass cut into stages: the embedding, each decoder block, the final norm.
pub(crate) trait Blockwise {
    /// What every stage of one forward shares (RoPE tables, masks, positions), built once.
    type Context;

    fn stage_context(&self, ids: &Tensor<2, Int>, attention: &AttentionPattern) -> Self::Context;
    /// Token (and position) embeddings `[rows, tokens, width]`.
    fn embed_stage(&self, ids: Tensor<2, Int>, context: &Self::Context) -> Tensor<3>;
    fn block_count(&self) -> usize;
    fn block_stage(&self, index: usize, x: Tensor<3>, context: &Self::Context) -> Tensor<3>;
    fn norm_stage(&self, x: Tensor<3>) -> Tensor<3>;
}

/// The input of every decoder block and of the final norm, from a forward without autodiff:
/// all that [`backward_through_blocks`] needs besides the ids.
#[derive(Debug, Clone)]
pub struct BlockInputs {
    inputs: Vec<Tensor<3>>,
}

impl BlockInputs {
    /// Stages after the embedding (blocks and the final norm).
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// Whether nothing was kept (never, for a model with a final norm).
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

/// The final hidden states of `model` (a plain, `valid()` module) on `ids`, and the inputs
/// of its blocks and final norm.
pub(crate) fn forward_keeping_block_inputs<M: Blockwise>(
    model: &M,
    ids: Tensor<2, Int>,
    attention: &AttentionPattern,
) -> (Tensor<3>, BlockInputs) {
    let context = model.stage_context(&ids, attention);
    let mut x = model.embed_stage(ids, &context);
    let mut inputs = Vec::with_capacity(model.block_count() + 1);
    for index in 0..model.block_count() {
        inputs.push(x.clone());
        x = model.block_stage(index, x, &context);
    }
    inputs.push(x.clone());
    (model.norm_stage(x), BlockInputs { inputs })
}

/// Back-propagates `grad_hidden` (the loss's gradient at the final hidden states, plain)
/// through `model` (on the autodiff device, the module whose parameters train), block by
/// block from `inputs`; every stage's gradients go to `sink`, last stage first. `ids` are on
/// the autodiff device. The embedding stage runs only when it has trainable weights.
///
/// Each stage runs `rows_per_pass` rows of the batch at a time (0: all at once): rows never
/// meet inside a stage (attention stays within a row), so a pass's graph, the largest thing
/// alive in the backward, shrinks with its rows, and the gradients are the same to float
/// rounding (summed over passes instead of inside one matrix product).
pub(crate) fn backward_through_blocks<M: Blockwise>(
    model: &M,
    ids: Tensor<2, Int>,
    attention: &AttentionPattern,
    inputs: BlockInputs,
    grad_hidden: Tensor<3>,
    rows_per_pass: usize,
    sink: &mut dyn FnMut(Gradients),
) {
    let [rows, tokens] = ids.dims();
    let passes: Vec<Pass<M>> = row_ranges(rows, rows_per_pass)
        .map(|range| {
            let ids = ids.clone().narrow(0, range.start, range.len());
            let context = model.stage_context(&ids, &attention.of_rows(range.clone(), tokens));
            Pass {
                range,
                ids,
                context,
            }
        })
        .collect();
    let norm = inputs.inputs.len() - 1;
    let mut upstream = grad_hidden;
    for (index, input) in inputs.inputs.into_iter().enumerate().rev() {
        let mut grad_input = Vec::with_capacity(passes.len());
        for pass in &passes {
            let leaf = Tensor::<3>::from_inner(pass.rows_of(&input)).require_grad();
            let output = if index == norm {
                model.norm_stage(leaf.clone())
            } else {
                model.block_stage(index, leaf.clone(), &pass.context)
            };
            let upstream = pass.rows_of(&upstream);
            let grads = (output * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            // The leaf always reaches the output, so its gradient is there; zeros would be
            // the right value if a stage ever ignored its input.
            grad_input.push(leaf.grad(&grads).unwrap_or_else(|| upstream.zeros_like()));
            sink(grads);
        }
        // One pass (the default) gives the whole gradient: no concatenation, no copy.
        upstream = match <[Tensor<3>; 1]>::try_from(grad_input) {
            Ok([whole]) => whole,
            Err(parts) => Tensor::cat(parts, 0),
        };
    }
    for pass in &passes {
        let embedded = model.embed_stage(pass.ids.clone(), &pass.context);
        if embedded.is_tracked() {
            let upstream = Tensor::from_inner(pass.rows_of(&upstream));
            sink((embedded * upstream).sum().backward());
        }
    }
}

/// Some rows of the batch, with what their stages share.
struct Pass<M: Blockwise> {
    range: Range<usize>,
    ids: Tensor<2, Int>,
    context: M::Context,
}

impl<M: Blockwise> Pass<M> {
    /// This pass's rows of a `[rows, tokens, width]` tensor.
    fn rows_of(&self, x: &Tensor<3>) -> Tensor<3> {
        x.clone().narrow(0, self.range.start, self.range.len())
    }
}

/// `0..rows` cut into consecutive ranges of `per_pass` rows (the last may be shorter);
/// `per_pass` 0 is one range of all of them.
fn row_ranges(rows: usize, per_pass: usize) -> impl Iterator<Item = Range<usize>> {
    let per_pass = if per_pass == 0 { rows.max(1) } else { per_pass };
    (0..rows)
        .step_by(per_pass)
        .map(move |start| start..(start + per_pass).min(rows))
}
