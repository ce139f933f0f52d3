//! One micro-batch: ONE policy forward over `[chosen; rejected; base × K]`, the named
//! quantities the objective asked for, and its per-example losses.
//!
//! Reference log-probs come from the anchor cache; the reference model runs live only for
//! token-level quantities (KL-DPO's `TokenKl`), without autodiff.

use bapo_anchors::ExampleAnchors;
use bapo_data::TokenizedExample;
use bapo_model::{CausalLm, ScoredLogits, TokenBatch, scored_logits};
use bapo_objective::kl::packed_sequence_kl;
use bapo_objective::{Needs, Objective, ObjectiveOutput, Quantities, Quantity, Response};
use burn::tensor::{Device, Tensor, TensorData};

use crate::TrainError;

/// A training example with its anchors: `anchors[k]` is reference `k`'s.
#[derive(Debug, Clone)]
pub struct AnchoredExample {
    pub tokens: TokenizedExample,
    pub anchors: Vec<ExampleAnchors>,
}

/// What the objective computed on a micro-batch.
pub struct MicroBatchOutput {
    pub output: ObjectiveOutput,
    /// Tokens the policy processed (prompts included, padding not).
    pub tokens: usize,
}

/// Rows of the policy batch: every response the objective needs, response-major.
struct Layout {
    batch: TokenBatch,
    /// (response, first row, rows per example) for each response present.
    blocks: Vec<(Response, usize, usize)>,
}

fn layout(examples: &[&AnchoredExample], base_per_example: usize, pad_id: u32) -> Layout {
    let b = examples.len();
    let chosen = examples
        .iter()
        .map(|e| (&e.tokens.prompt[..], &e.tokens.chosen[..]));
    let rejected = examples
        .iter()
        .map(|e| (&e.tokens.prompt[..], &e.tokens.rejected[..]));
    // Anchor-major: rows 2B + a·B + i hold anchor a of example i.
    let base = (0..base_per_example).flat_map(|a| {
        examples
            .iter()
            .map(move |e| (&e.tokens.prompt[..], &e.anchors[0].base[a][..]))
    });
    let mut blocks = vec![(Response::Chosen, 0, 1), (Response::Rejected, b, 1)];
    if base_per_example > 0 {
        blocks.push((Response::Base, 2 * b, base_per_example));
    }
    Layout {
        batch: TokenBatch::from_pairs(chosen.chain(rejected).chain(base), pad_id),
        blocks,
    }
}

/// `[B·K]` values in anchor-major order → `[B, K]`.
fn per_example(values: Tensor<1>, examples: usize, per: usize) -> Tensor<2> {
    values.reshape([per, examples]).swap_dims(0, 1)
}

fn constant(values: Vec<f32>, examples: usize, per: usize, device: &Device) -> Tensor<2> {
    // Built example-major: `[B, K]` directly.
    Tensor::from_data(TensorData::new(values, [examples, per]), device)
}

/// Reference `k`'s log-probs / token counts of `response`, `[B, K]`.
fn reference_values(
    examples: &[&AnchoredExample],
    k: usize,
    response: Response,
    per: usize,
    counts: bool,
) -> Vec<f32> {
    examples
        .iter()
        .flat_map(|e| {
            let a = &e.anchors[k.min(e.anchors.len() - 1)];
            let row: Vec<f32> = match (response, counts) {
                (Response::Chosen, false) => vec![a.chosen_logp],
                (Response::Rejected, false) => vec![a.rejected_logp],
                (Response::Base, false) => a.base_logps[..per].to_vec(),
                (Response::Chosen, true) => vec![e.tokens.chosen.len() as f32],
                (Response::Rejected, true) => vec![e.tokens.rejected.len() as f32],
                (Response::Base, true) => a.base_tokens[..per].iter().map(|&n| n as f32).collect(),
            };
            row
        })
        .collect()
}

/// Runs the objective on `examples`. `policy` lives on the autodiff device `device`;
/// `reference` (plain) is used only for token-level KL.
pub fn micro_batch(
    policy: &CausalLm,
    reference: Option<&CausalLm>,
    objective: &dyn Objective,
    needs: &Needs,
    examples: &[&AnchoredExample],
    pad_id: u32,
    device: &Device,
) -> Result<MicroBatchOutput, TrainError> {
    let b = examples.len();
    let base_per_example = if needs.needs_base_responses() {
        needs.anchors_per_prompt
    } else {
        0
    };
    let layout = layout(examples, base_per_example, pad_id);
    let tokens = layout.batch.ids.iter().map(Vec::len).sum();
    let scored = scored_logits(policy, &layout.batch, device)
        .map_err(|e| TrainError::Batch(e.to_string()))?;
    let totals = scored.logprobs(device).total;

    let mut quantities = Quantities::new();
    for q in needs.quantities.iter().copied() {
        let Some(&(response, first, per)) = layout.blocks.iter().find(|(r, ..)| *r == q.response())
        else {
            return Err(TrainError::Objective(format!(
                "the objective needs the {q}, which this loop cannot provide"
            )));
        };
        let value = match q {
            Quantity::PolicyLogp(_) => {
                per_example(totals.clone().narrow(0, first, b * per), b, per)
            }
            Quantity::ReferenceLogp { reference: k, .. } => {
                if examples.iter().any(|e| e.anchors.len() <= k) {
                    return Err(TrainError::Objective(format!(
                        "the objective needs reference {k}, but only {} reference(s) are configured \
                         (`model.references` lists the extra ones)",
                        examples[0].anchors.len()
                    )));
                }
                let values = reference_values(examples, k, response, per, false);
                constant(values, b, per, device)
            }
            Quantity::TokenCount(_) => constant(
                reference_values(examples, 0, response, per, true),
                b,
                per,
                device,
            ),
            Quantity::TokenKl { direction, .. } => {
                let reference = reference.ok_or_else(|| {
                    TrainError::Objective("token-level KL needs the live reference".into())
                })?;
                let rows = first..first + b * per;
                let kl = token_kl(&scored, &layout.batch, rows, reference, direction, device)?;
                per_example(kl, b, per)
            }
        };
        quantities.insert(q, value);
    }
    let output = objective
        .compute(&quantities)
        .map_err(|e| TrainError::Objective(e.to_string()))?;
    Ok(MicroBatchOutput { output, tokens })
}

/// Mean per-token KL between policy and reference over the scored tokens of each sequence in
/// `rows`, `[rows.len()]`.
pub fn token_kl(
    policy: &ScoredLogits,
    batch: &TokenBatch,
    rows: std::ops::Range<usize>,
    reference: &CausalLm,
    direction: bapo_objective::KlDirection,
    device: &Device,
) -> Result<Tensor<1>, TrainError> {
    let count = rows.len();
    let first = policy.sequence.iter().position(|s| rows.contains(s));
    let last = policy.sequence.iter().rposition(|s| rows.contains(s));
    let (Some(first), Some(last), Some(logits)) = (first, last, policy.logits.as_ref()) else {
        return Ok(Tensor::zeros([count], device));
    };
    let n = last + 1 - first;
    let sub = TokenBatch {
        ids: batch.ids[rows.clone()].to_vec(),
        scored: batch.scored[rows.clone()].to_vec(),
        pad_id: batch.pad_id,
    };
    // The reference runs on the plain device; its logits enter the graph as a constant.
    let plain = device.clone().inner();
    let reference_logits = scored_logits(reference, &sub, &plain)
        .map_err(|e| TrainError::Batch(e.to_string()))?
        .logits
        .ok_or_else(|| TrainError::Batch("reference scored nothing".into()))?;
    let reference_logits = Tensor::<2>::from_inner(reference_logits);
    let policy_logits = logits.clone().narrow(0, first, n);
    let owners: Vec<usize> = policy.sequence[first..=last]
        .iter()
        .map(|s| s - rows.start)
        .collect();
    Ok(packed_sequence_kl(
        policy_logits,
        reference_logits,
        &owners,
        count,
        direction,
    ))
}
