//! One micro-batch: one policy forward (two with recomputed blocks) over every example's
//! chosen, rejected and K base responses (laid out by `bapo_data::PreferenceBatch`, the
//! prompt shared by default), the named quantities the objective asked for, its per-example
//! losses, and the gradients of their scaled sum (one `backward()`, or several stages when
//! memory saving is on: `step/staged.rs`).
//!
//! Reference log-probs come from the anchor cache; the reference model runs live only for
//! token-level quantities (KL-DPO's `TokenKl`), without autodiff.

use bapo_data::{ExampleResponses, Packing, PreferenceBatch, ScoringInput, Slot};
use bapo_model::{CausalLm, ScoredLogits};
use bapo_objective::kl::packed_sequence_kl;
use bapo_objective::{Needs, Objective, ObjectiveOutput, Quantities, Quantity, Response};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};

use crate::TrainError;
use crate::example::AnchoredExample;

mod staged;

/// What every step of a run shares.
pub struct StepSetup<'a> {
    pub objective: &'a dyn Objective,
    pub needs: &'a Needs,
    /// The reference, for objectives that run it live (token-level KL).
    pub live_reference: Option<&'a CausalLm>,
    pub packing: Packing,
    pub pad_token: u32,
    /// The autodiff device the policy lives on.
    pub device: &'a Device,
    pub max_grad_norm: f64,
    pub memory: MemorySaving,
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
            base: &e.base,
        }),
        base_per_example,
        packing,
        pad_id,
    )
    .map_err(TrainError::from)
}

/// `[B·K]` values in anchor-major order → `[B, K]`.
fn per_example(values: Tensor<1>, examples: usize, per: usize) -> Tensor<2> {
    values.reshape([per, examples]).swap_dims(0, 1)
}

fn constant(values: Vec<f32>, examples: usize, per: usize, device: &Device) -> Tensor<2> {
    // Built example-major: `[B, K]` directly.
    Tensor::from_data(TensorData::new(values, [examples, per]), device)
}

/// Reference `k`'s log-probs of `response`, `[B, K]` example-major; `None` when an example
/// lacks them (reference `k` is not configured, or it has no base log-probs: only the
/// reference the run starts from scores the base responses).
fn reference_logps(
    examples: &[&AnchoredExample],
    k: usize,
    response: Response,
    per: usize,
) -> Option<Vec<f32>> {
    let mut values = Vec::with_capacity(examples.len() * per);
    for e in examples {
        let r = e.reference(k)?;
        match response {
            Response::Chosen => values.push(r.chosen),
            Response::Rejected => values.push(r.rejected),
            Response::Base => values.extend_from_slice(r.base.get(..per)?),
        }
    }
    Some(values)
}

/// Token counts of `response`, `[B, K]` example-major.
fn token_counts(examples: &[&AnchoredExample], response: Response, per: usize) -> Vec<f32> {
    examples
        .iter()
        .flat_map(|e| -> Vec<usize> {
            match response {
                Response::Chosen => vec![e.tokens.chosen.len()],
                Response::Rejected => vec![e.tokens.rejected.len()],
                Response::Base => e.base.iter().take(per).map(Vec::len).collect(),
            }
        })
        .map(|n| n as f32)
        .collect()
}

/// How a micro-batch's forward and backward trade compute for memory
/// (`training.gradient_checkpointing`, `training.recompute_chunk_rows`,
/// `training.lm_head_chunk_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySaving {
    /// Keep only each block's input and recompute the block in the backward.
    pub gradient_checkpointing: bool,
    /// Run the LM head and log-softmax this many scored tokens at a time, forward and
    /// backward (0: all at once, with autodiff).
    pub lm_head_chunk_tokens: usize,
    /// With `gradient_checkpointing`, recompute each block for this many rows of the
    /// micro-batch at a time (0: all of them).
    pub recompute_chunk_rows: usize,
}

impl MemorySaving {
    /// Whether the backward runs in stages (see `step/staged.rs`) rather than as one
    /// `loss.backward()`.
    pub fn staged(self) -> bool {
        self.gradient_checkpointing || self.lm_head_chunk_tokens > 0
    }
}

/// What a micro-batch's gradients are for: the module they belong to, the accumulator they
/// go to, and the step's example count, which divides the summed per-example losses (the
/// step's mean loss, as TRL takes it).
pub struct GradientSink<'a> {
    pub policy: &'a CausalLm,
    pub accumulator: &'a mut GradientsAccumulator<CausalLm>,
    pub step_examples: usize,
}

impl GradientSink<'_> {
    /// Adds the parameter gradients of one backward.
    pub fn add(&mut self, grads: Gradients) {
        let params = GradientsParams::from_grads(grads, self.policy);
        self.accumulator.accumulate(self.policy, params);
    }

    /// The loss to back-propagate: the per-example losses summed, over the step's examples.
    pub fn loss(&self, output: &ObjectiveOutput) -> Tensor<1> {
        output
            .losses
            .clone()
            .sum()
            .div_scalar(self.step_examples as f64)
    }
}

/// Runs the objective on `examples` and adds the gradients of its loss to `sink`, whose
/// policy lives on `setup`'s autodiff device.
pub fn micro_batch(
    setup: &StepSetup<'_>,
    examples: &[&AnchoredExample],
    sink: &mut GradientSink<'_>,
) -> Result<MicroBatchOutput, TrainError> {
    let needs = setup.needs;
    let base_per_example = if needs.needs_base_responses() {
        needs.anchors_per_prompt
    } else {
        0
    };
    let batch = preference_batch(examples, base_per_example, setup.packing, setup.pad_token)?;
    let tokens = batch.sequence_tokens();
    let inputs = ObjectiveInputs {
        setup,
        examples,
        batch: &batch,
        base_per_example,
    };
    if setup.memory.staged() {
        let layout = batch.input.layout()?;
        if layout.scored_tokens() > 0 {
            let output = staged::staged_backward(&inputs, &layout, sink)?;
            return Ok(MicroBatchOutput { output, tokens });
        }
    }
    let device = setup.device;
    let scored = batch.input.scored_logits(sink.policy, device)?;
    let totals = scored.logprobs(device).total;
    let output = inputs.output(totals, Some(&scored))?;
    sink.add(sink.loss(&output).backward());
    Ok(MicroBatchOutput { output, tokens })
}

/// Everything the objective's quantities are computed from, besides the policy's log-probs.
pub(crate) struct ObjectiveInputs<'a> {
    pub setup: &'a StepSetup<'a>,
    pub examples: &'a [&'a AnchoredExample],
    pub batch: &'a PreferenceBatch,
    pub base_per_example: usize,
}

impl ObjectiveInputs<'_> {
    /// The objective's output from the policy's per-sequence log-probs `totals` (batch
    /// numbering) and, for token-level quantities, the policy's scored logits.
    pub fn output(
        &self,
        totals: Tensor<1>,
        scored: Option<&ScoredLogits>,
    ) -> Result<ObjectiveOutput, TrainError> {
        let (b, batch, device) = (self.examples.len(), self.batch, self.setup.device);
        let mut quantities = Quantities::new();
        for q in self.setup.needs.quantities.iter().copied() {
            let response = q.response();
            let per = match response {
                Response::Base if self.base_per_example == 0 => {
                    return Err(TrainError::UnsupportedQuantity(q));
                }
                Response::Base => self.base_per_example,
                _ => 1,
            };
            let slots = slots(response, self.base_per_example);
            let value = match q {
                Quantity::PolicyLogp(_) => {
                    let rows = index_tensor(&batch.sequences(&slots), device);
                    per_example(totals.clone().select(0, rows), b, per)
                }
                Quantity::ReferenceLogp { reference: k, .. } => {
                    if let Some(e) = self.examples.iter().find(|e| e.reference(k).is_none()) {
                        return Err(TrainError::MissingReference {
                            index: k,
                            configured: e.reference_count(),
                        });
                    }
                    let values = reference_logps(self.examples, k, response, per)
                        .ok_or(TrainError::UnsupportedQuantity(q))?;
                    constant(values, b, per, device)
                }
                Quantity::TokenCount(_) => {
                    constant(token_counts(self.examples, response, per), b, per, device)
                }
                Quantity::TokenKl { direction, .. } => {
                    let reference = self
                        .setup
                        .live_reference
                        .ok_or(TrainError::NoLiveReference)?;
                    // The chunked LM head keeps no logits; the config refuses it with
                    // token-level KL, so this is only reached by a caller that did not check.
                    let scored = scored.ok_or(TrainError::UnsupportedQuantity(q))?;
                    let kl = token_kl(
                        scored,
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
        Ok(self.setup.objective.compute(&quantities)?)
    }
}

pub(crate) fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let values: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(values, [indices.len()]), device)
}

/// The policy's scored rows that a token-level KL compares with the reference's, in the
/// reference's order (by place in the compared `sequences`, then token order).
pub(crate) struct KlRows {
    /// For each compared row, its sequence's place in `sequences`: the reference's numbering.
    pub owners: Vec<usize>,
    /// For each compared row, its index among the policy's scored rows.
    pub policy_rows: Vec<usize>,
}

impl KlRows {
    /// The rows of `sequences` among the policy's scored rows, whose sequences are
    /// `policy_sequence`.
    pub fn of(policy_sequence: &[usize], sequences: &[usize]) -> KlRows {
        let place: std::collections::HashMap<usize, usize> =
            sequences.iter().enumerate().map(|(p, &s)| (s, p)).collect();
        let mut rows: Vec<(usize, usize)> = policy_sequence
            .iter()
            .enumerate()
            .filter_map(|(row, s)| place.get(s).map(|&p| (p, row)))
            .collect();
        rows.sort_by_key(|&(p, _)| p);
        KlRows {
            owners: rows.iter().map(|&(p, _)| p).collect(),
            policy_rows: rows.iter().map(|&(_, r)| r).collect(),
        }
    }
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
    let KlRows {
        owners,
        policy_rows,
    } = KlRows::of(&policy.sequence, sequences);
    if owners.is_empty() {
        return Ok(Tensor::zeros([count], device));
    }
    // The reference runs on the plain device; its logits enter the graph as a constant.
    let plain = device.clone().inner();
    let reference_scored = reference_input.scored_logits(reference, &plain)?;
    if reference_scored.sequence != owners {
        return Err(TrainError::ReferenceMismatch);
    }
    let reference_logits = reference_scored
        .logits
        .ok_or(TrainError::ReferenceMismatch)?;
    let reference_logits = Tensor::<2>::from_inner(reference_logits);
    let policy_logits = logits.clone().select(0, index_tensor(&policy_rows, device));
    Ok(packed_sequence_kl(
        policy_logits,
        reference_logits,
        &owners,
        count,
        direction,
    ))
}

#[cfg(test)]
mod tests {
    use bapo_data::TokenizedExample;
    use bapo_objective::Response;

    use super::{reference_logps, token_counts};
    use crate::example::{AnchoredExample, ReferenceLogps};

    /// An example with `chosen` and `rejected` of 3 and 5 tokens, base responses of the given
    /// lengths, and references whose log-probs are numbered from `first`.
    fn example(first: f32, base_lengths: &[usize]) -> AnchoredExample {
        let logps = |start: f32, base: usize| ReferenceLogps {
            chosen: start,
            rejected: start + 1.0,
            base: (0..base).map(|i| start + 2.0 + i as f32).collect(),
        };
        AnchoredExample {
            tokens: TokenizedExample {
                prompt: vec![1, 2],
                chosen: vec![3; 3],
                rejected: vec![4; 5],
                base: None,
                user: None,
                entity: None,
                line: 1,
            },
            base: base_lengths.iter().map(|&n| vec![5; n]).collect(),
            reference: logps(first, base_lengths.len()),
            // A further reference scores chosen and rejected only.
            further_references: vec![logps(first + 100.0, 0)],
        }
    }

    #[test]
    fn reference_values_are_example_major_and_a_missing_one_is_none() {
        let (a, b) = (example(0.0, &[4, 6]), example(10.0, &[7, 8]));
        let examples = [&a, &b];
        assert_eq!(
            reference_logps(&examples, 0, Response::Base, 2),
            Some(vec![2.0, 3.0, 12.0, 13.0])
        );
        assert_eq!(
            reference_logps(&examples, 1, Response::Rejected, 1),
            Some(vec![101.0, 111.0])
        );
        // The further reference has no base log-probs, and there is no third reference.
        assert_eq!(reference_logps(&examples, 1, Response::Base, 1), None);
        assert_eq!(reference_logps(&examples, 2, Response::Chosen, 1), None);
    }

    #[test]
    fn token_counts_are_the_responses_lengths() {
        let (a, b) = (example(0.0, &[4, 6]), example(10.0, &[7, 8]));
        let examples = [&a, &b];
        assert_eq!(token_counts(&examples, Response::Chosen, 1), [3.0, 3.0]);
        assert_eq!(token_counts(&examples, Response::Rejected, 1), [5.0, 5.0]);
        assert_eq!(
            token_counts(&examples, Response::Base, 2),
            [4.0, 6.0, 7.0, 8.0]
        );
    }
}
