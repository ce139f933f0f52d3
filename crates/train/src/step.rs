//! One micro-batch: ONE policy forward over every example's chosen, rejected and K base
//! responses (laid out by `bapo_data::PreferenceBatch`, the prompt shared by default), the
//! named quantities the objective asked for, and its per-example losses.
//!
//! Reference log-probs come from the anchor cache; the reference model runs live only for
//! token-level quantities (KL-DPO's `TokenKl`), without autodiff.

use bapo_anchors::ExampleAnchors;
use bapo_data::TokenizedExample;
use bapo_data::{ExampleResponses, Packing, PreferenceBatch, ScoringInput, Slot};
use bapo_model::{CausalLm, ScoredLogits};
use bapo_objective::kl::packed_sequence_kl;
use bapo_objective::{Needs, Objective, ObjectiveOutput, Quantities, Quantity, Response};
use burn::tensor::{Device, Int, Tensor, TensorData};

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
    /// Tokens of the batch's sequences, a prompt counted once per response (as TRL counts
    /// them), whatever the packing; padding not counted.
    pub tokens: usize,
}

/// The slots of the batch that hold `response`.
fn slots(response: Response, base_per_example: usize) -> Vec<Slot> {
    match response {
        Response::Chosen => vec![Slot::Chosen],
        Response::Rejected => vec![Slot::Rejected],
        Response::Base => (0..base_per_example).map(Slot::Base).collect(),
    }
}

/// The policy batch of `examples`: every response the objective needs, with the primary
/// reference's base responses.
pub fn preference_batch(
    examples: &[&AnchoredExample],
    base_per_example: usize,
    packing: Packing,
    pad_id: u32,
) -> Result<PreferenceBatch, TrainError> {
    PreferenceBatch::new(
        examples.iter().map(|e| ExampleResponses {
            prompt: &e.tokens.prompt,
            chosen: &e.tokens.chosen,
            rejected: &e.tokens.rejected,
            base: &e.anchors[0].base,
        }),
        base_per_example,
        packing,
        pad_id,
    )
    .map_err(|e| TrainError::Batch(e.to_string()))
}

/// `[B·K]` values in anchor-major order → `[B, K]`.
fn per_example(values: Tensor<1>, examples: usize, per: usize) -> Tensor<2> {
    values.reshape([per, examples]).swap_dims(0, 1)
}

fn constant(values: Vec<f32>, examples: usize, per: usize, device: &Device) -> Tensor<2> {
    // Built example-major: `[B, K]` directly.
    Tensor::from_data(TensorData::new(values, [examples, per]), device)
}

/// Reference `k`'s log-probs / token counts of `response`, `[B, K]`. Every example has
/// reference `k`'s results (the caller checks it for `k > 0`; reference 0 is the model the
/// run starts from, which every example has) and `per` base responses (the anchor cache
/// refuses a chunk with another count).
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
            let a = &e.anchors[k];
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
#[allow(clippy::too_many_arguments)]
pub fn micro_batch(
    policy: &CausalLm,
    reference: Option<&CausalLm>,
    objective: &dyn Objective,
    needs: &Needs,
    examples: &[&AnchoredExample],
    packing: Packing,
    pad_id: u32,
    device: &Device,
) -> Result<MicroBatchOutput, TrainError> {
    let b = examples.len();
    let base_per_example = if needs.needs_base_responses() {
        needs.anchors_per_prompt
    } else {
        0
    };
    let batch = preference_batch(examples, base_per_example, packing, pad_id)?;
    let tokens = batch.sequence_tokens();
    let scored = batch
        .input
        .scored_logits(policy, device)
        .map_err(|e| TrainError::Batch(e.to_string()))?;
    let totals = scored.logprobs(device).total;

    let mut quantities = Quantities::new();
    for q in needs.quantities.iter().copied() {
        let response = q.response();
        let per = match response {
            Response::Base if base_per_example == 0 => {
                return Err(TrainError::Objective(format!(
                    "the objective needs the {q}, which this loop cannot provide"
                )));
            }
            Response::Base => base_per_example,
            _ => 1,
        };
        let slots = slots(response, base_per_example);
        let value = match q {
            Quantity::PolicyLogp(_) => {
                let rows = index_tensor(&batch.sequences(&slots), device);
                per_example(totals.clone().select(0, rows), b, per)
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
                let kl = token_kl(
                    &scored,
                    &batch.sequences(&slots),
                    reference,
                    &batch.restricted_to(&slots),
                    direction,
                    device,
                )?;
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

fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// Mean per-token KL between policy and reference over the scored tokens of each of
/// `sequences` (policy numbering), `[sequences.len()]`. `reference_input` holds the same
/// sequences, numbered `0..sequences.len()` in that order.
pub fn token_kl(
    policy: &ScoredLogits,
    sequences: &[usize],
    reference: &CausalLm,
    reference_input: &ScoringInput,
    direction: bapo_objective::KlDirection,
    device: &Device,
) -> Result<Tensor<1>, TrainError> {
    let count = sequences.len();
    let Some(logits) = policy.logits.as_ref() else {
        return Ok(Tensor::zeros([count], device));
    };
    // The policy's rows of those sequences, in the reference's order: by place in
    // `sequences`, then token order.
    let place: std::collections::HashMap<usize, usize> =
        sequences.iter().enumerate().map(|(p, &s)| (s, p)).collect();
    let mut rows: Vec<(usize, usize)> = policy
        .sequence
        .iter()
        .enumerate()
        .filter_map(|(row, s)| place.get(s).map(|&p| (p, row)))
        .collect();
    rows.sort_by_key(|&(p, _)| p);
    if rows.is_empty() {
        return Ok(Tensor::zeros([count], device));
    }
    // The reference runs on the plain device; its logits enter the graph as a constant.
    let plain = device.clone().inner();
    let reference_scored = reference_input
        .scored_logits(reference, &plain)
        .map_err(|e| TrainError::Batch(e.to_string()))?;
    let owners: Vec<usize> = rows.iter().map(|&(p, _)| p).collect();
    if reference_scored.sequence != owners {
        return Err(TrainError::Batch(
            "the reference scored other tokens than the policy".into(),
        ));
    }
    let reference_logits = reference_scored
        .logits
        .ok_or_else(|| TrainError::Batch("reference scored nothing".into()))?;
    let reference_logits = Tensor::<2>::from_inner(reference_logits);
    let policy_rows: Vec<usize> = rows.iter().map(|&(_, r)| r).collect();
    let policy_logits = logits.clone().select(0, index_tensor(&policy_rows, device));
    Ok(packed_sequence_kl(
        policy_logits,
        reference_logits,
        &owners,
        count,
        direction,
    ))
}
