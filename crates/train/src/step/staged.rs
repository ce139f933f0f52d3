//! A micro-batch's backward in stages, to hold less at once (`training.gradient_checkpointing`,
//! `training.lm_head_chunk_tokens`). The gradients are those of one `loss.backward()`, to
//! float rounding (staged_tests.rs checks every parameter's).
//!
//! The stages meet at the final hidden states' rows that predict scored tokens, `[n, width]`:
//! 1. the trunk's forward gives the rows: with autodiff (its graph held), or, recomputing,
//!    on the plain module keeping only each block's input;
//! 2. the LM head, the log-probs and the objective run from the rows made a leaf, which gives
//!    the loss, the head's gradients and the rows' gradient — in one autodiff pass, or a
//!    chunk of rows at a time (below);
//! 3. the rows' gradient goes on into the trunk: one backward of `Σ rows · gradient` through
//!    the held graph, or block by block (`bapo_model::recompute`).

use bapo_model::CausalModel;
use bapo_model::{BlockInputs, CausalLm, ScoringLayout, chunked_target_logprobs, target_logprobs};
use bapo_objective::ObjectiveOutput;
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};

use super::{GradientSink, ObjectiveInputs};
use crate::TrainError;

/// How the rows' gradient goes on into the trunk.
enum Trunk {
    /// The autodiff forward's rows, whose graph is still held (boxed: a tensor handle is
    /// several times the size of the other variant).
    Graph(Box<Tensor<2>>),
    /// A plain forward's block inputs: recompute block by block.
    Recompute(BlockInputs),
}

/// Runs the objective on the batch of `inputs`, laid out as `layout` (with scored tokens),
/// and adds its gradients to `sink` stage by stage.
pub(super) fn staged_backward(
    inputs: &ObjectiveInputs<'_>,
    layout: &ScoringLayout,
    sink: &mut GradientSink<'_>,
) -> Result<ObjectiveOutput, TrainError> {
    let policy: &CausalLm = sink.policy;
    let (device, memory) = (inputs.setup.device, inputs.setup.memory);
    let plain_device = device.clone().inner();
    let plain = policy.valid();
    let (rows, trunk) = if memory.gradient_checkpointing {
        let (hidden, kept) = plain.forward_keeping_block_inputs(layout, &plain_device);
        (layout.predictor_rows(hidden), Trunk::Recompute(kept))
    } else {
        let rows = layout.predictor_rows(layout.hidden_states(policy, device));
        (rows.clone().inner(), Trunk::Graph(Box::new(rows)))
    };
    let (output, grad_rows) = if memory.lm_head_chunk_tokens == 0 {
        head_backward(inputs, layout, rows, sink)?
    } else {
        chunked_head_backward(
            inputs,
            layout,
            &plain,
            rows,
            memory.lm_head_chunk_tokens,
            sink,
        )?
    };
    match trunk {
        Trunk::Graph(rows) => {
            // Untracked when nothing below the head trains (LoRA on the head alone).
            if rows.is_tracked() {
                sink.add((*rows * Tensor::from_inner(grad_rows)).sum().backward());
            }
        }
        Trunk::Recompute(kept) => {
            let grad_hidden = layout.hidden_of_rows(grad_rows);
            let rows_per_pass = memory.recompute_chunk_rows;
            policy.backward_through_blocks(
                layout,
                device,
                kept,
                grad_hidden,
                rows_per_pass,
                &mut |grads| sink.add(grads),
            );
        }
    }
    Ok(output)
}

/// The LM head with autodiff from the rows (plain) made a leaf: the objective's output, and
/// the loss back-propagated to the head's weights (into `sink`) and to the rows (returned).
fn head_backward(
    inputs: &ObjectiveInputs<'_>,
    layout: &ScoringLayout,
    rows: Tensor<2>,
    sink: &mut GradientSink<'_>,
) -> Result<(ObjectiveOutput, Tensor<2>), TrainError> {
    let leaf = Tensor::from_inner(rows.clone()).require_grad();
    let scored = layout.scored(Some(sink.policy.logits(leaf.clone())));
    let totals = scored.logprobs(inputs.setup.device).total;
    let output = inputs.output(totals, Some(&scored))?;
    let grads = sink.loss(&output).backward();
    let grad_rows = leaf.grad(&grads).unwrap_or_else(|| rows.zeros_like());
    sink.add(grads);
    Ok((output, grad_rows))
}

/// The LM head `chunk` rows at a time, in two passes, so that at most `chunk × vocabulary`
/// logits (and their softmax) exist at once:
/// 1. without autodiff, each sequence's log-prob; from them the objective's loss and its
///    gradient `g_s` with respect to each sequence's log-prob (a leaf);
/// 2. each chunk again with autodiff, back-propagating `Σ_t g_s(t) · log p_t` over its
///    tokens: a sequence's log-prob is the sum of its tokens', so this has the loss's
///    gradient with respect to the head's weights and the rows.
fn chunked_head_backward(
    inputs: &ObjectiveInputs<'_>,
    layout: &ScoringLayout,
    plain: &CausalLm,
    rows: Tensor<2>,
    chunk: usize,
    sink: &mut GradientSink<'_>,
) -> Result<(ObjectiveOutput, Tensor<2>), TrainError> {
    let plain_device = rows.device();
    let token_logprobs = chunked_target_logprobs(plain, rows.clone(), &layout.targets, chunk);
    let totals = layout
        .sequence_logprobs(token_logprobs, &plain_device)
        .total;
    let totals = Tensor::from_inner(totals).require_grad();
    let output = inputs.output(totals.clone(), None)?;
    let loss = sink.loss(&output);
    let grad_totals = if loss.is_tracked() {
        totals.grad(&loss.backward())
    } else {
        None
    };
    let grad_totals = grad_totals.unwrap_or_else(|| totals.clone().inner().zeros_like());
    let n = layout.scored_tokens();
    let owners: Vec<i64> = layout.sequence.iter().map(|&s| s as i64).collect();
    let owners = Tensor::<1, Int>::from_data(TensorData::new(owners, [n]), &plain_device);
    let token_weights = grad_totals.select(0, owners);
    let mut grad_rows = Vec::with_capacity(n.div_ceil(chunk));
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let part = rows.clone().narrow(0, start, len);
        let targets = &layout.targets[start..start + len];
        let weights = token_weights.clone().narrow(0, start, len);
        // A head frozen in the model file's blocks has no parameters: its input's gradient
        // is written out, a slice of the vocabulary at a time.
        if let Some(grad) = plain.frozen_head_gradient(part.clone(), targets, weights.clone()) {
            grad_rows.push(grad);
            continue;
        }
        let leaf = Tensor::from_inner(part.clone()).require_grad();
        let logprobs = target_logprobs(sink.policy.logits(leaf.clone()), targets);
        let grads = (logprobs * Tensor::from_inner(weights)).sum().backward();
        grad_rows.push(leaf.grad(&grads).unwrap_or_else(|| part.zeros_like()));
        sink.add(grads);
    }
    Ok((output, Tensor::cat(grad_rows, 0)))
}

#[cfg(test)]
#[path = "staged_tests.rs"]
mod tests;
