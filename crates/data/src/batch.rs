//! The preference batch — the one owner of how an example's responses are laid out for the
//! model — deterministic shuffling, and train/test splits by entity.
//!
//! A batch of `B` examples is scored in **one** forward pass. Each example contributes its
//! chosen response, its rejected response and `K` base responses (slots, in that order), all
//! after the same prompt. With [`Packing::SharedPrompt`] (the default) an example is one row
//! `[prompt | chosen | rejected | base…]` whose completions see the prompt and themselves
//! only, so the prompt is computed once; with [`Packing::Unshared`] every response is its own
//! `prompt + response` row. Both give the same log-probs (to float rounding).

use std::collections::BTreeMap;

use bapo_model::{
    BatchError, CausalModel, PromptGroup, ScoredLogits, ScoringLayout, SharedPromptBatch,
    TokenBatch, scored_logits, scored_logits_shared,
};
use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::tokenize::TokenizedExample;

/// A response of an example, by its slot in the example's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Chosen,
    Rejected,
    /// Base response `k` (`0..K`).
    Base(usize),
}

/// How the responses of an example are laid out for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Packing {
    /// One row per example, the prompt computed once (prefix sharing).
    #[default]
    SharedPrompt,
    /// One `prompt + response` row per response.
    Unshared,
}

/// The responses of one example to score: its prompt, chosen, rejected and base responses.
#[derive(Debug, Clone, Copy)]
pub struct ExampleResponses<'a> {
    pub prompt: &'a [u32],
    pub chosen: &'a [u32],
    pub rejected: &'a [u32],
    pub base: &'a [Vec<u32>],
}

/// The model input of a preference batch, in either packing. Sequences are numbered
/// example-major: example `i`'s slots are sequences `i·S .. (i+1)·S`.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoringInput {
    Shared(SharedPromptBatch),
    Unshared(TokenBatch),
}

impl ScoringInput {
    /// Runs `model` and its LM head over the scored positions.
    pub fn scored_logits<M: CausalModel + ?Sized>(
        &self,
        model: &M,
        device: &Device,
    ) -> Result<ScoredLogits, BatchError> {
        match self {
            ScoringInput::Shared(batch) => scored_logits_shared(model, batch, device),
            ScoringInput::Unshared(batch) => scored_logits(model, batch, device),
        }
    }

    /// The model input and the rows that predict scored tokens, for running the scoring in
    /// stages (see `bapo_model::ScoringLayout`).
    pub fn layout(&self) -> Result<ScoringLayout, BatchError> {
        match self {
            ScoringInput::Shared(batch) => ScoringLayout::of_shared(batch),
            ScoringInput::Unshared(batch) => ScoringLayout::of_tokens(batch),
        }
    }

    /// Tokens the model processes (padding not counted).
    pub fn tokens(&self) -> usize {
        match self {
            ScoringInput::Shared(batch) => batch.tokens(),
            ScoringInput::Unshared(batch) => batch.ids.iter().map(Vec::len).sum(),
        }
    }

    fn build(groups: Vec<PromptGroup>, packing: Packing, pad_id: u32) -> ScoringInput {
        let shared = SharedPromptBatch { groups, pad_id };
        match packing {
            Packing::SharedPrompt => ScoringInput::Shared(shared),
            Packing::Unshared => ScoringInput::Unshared(shared.unshared()),
        }
    }
}

/// One batch of examples: which sequence holds which response, and the model input.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceBatch {
    /// Examples in the batch (`B`).
    pub size: usize,
    /// Base responses per example (`K`).
    pub base_per_example: usize,
    pub input: ScoringInput,
    examples: Vec<GroupSource>,
    packing: Packing,
}

/// What an example's group was built from, to rebuild a subset of its slots.
#[derive(Debug, Clone, PartialEq)]
struct GroupSource {
    prompt: Vec<u32>,
    responses: Vec<Vec<u32>>,
}

impl PreferenceBatch {
    /// The batch of `examples` with their first `base_per_example` base responses each.
    pub fn new<'a>(
        examples: impl IntoIterator<Item = ExampleResponses<'a>>,
        base_per_example: usize,
        packing: Packing,
        pad_id: u32,
    ) -> Result<PreferenceBatch, BatchError> {
        let mut sources = Vec::new();
        for (index, e) in examples.into_iter().enumerate() {
            if e.base.len() < base_per_example {
                return Err(BatchError::MissingBase {
                    index,
                    wanted: base_per_example,
                    found: e.base.len(),
                });
            }
            let mut responses = vec![e.chosen.to_vec(), e.rejected.to_vec()];
            responses.extend(e.base[..base_per_example].iter().cloned());
            sources.push(GroupSource {
                prompt: e.prompt.to_vec(),
                responses,
            });
        }
        let groups = sources
            .iter()
            .map(|s| PromptGroup {
                prompt: s.prompt.clone(),
                completions: s.responses.clone(),
            })
            .collect();
        Ok(PreferenceBatch {
            size: sources.len(),
            base_per_example,
            input: ScoringInput::build(groups, packing, pad_id),
            examples: sources,
            packing,
        })
    }

    /// Tokens of the batch's sequences counted as unshared rows (prompt + response for every
    /// response): the same whatever the packing, so throughputs of both compare.
    pub fn sequence_tokens(&self) -> usize {
        self.examples
            .iter()
            .map(|s| {
                s.responses
                    .iter()
                    .map(|r| s.prompt.len() + r.len())
                    .sum::<usize>()
            })
            .sum()
    }

    fn slots_per_example(&self) -> usize {
        2 + self.base_per_example
    }

    fn slot_index(slot: Slot) -> usize {
        match slot {
            Slot::Chosen => 0,
            Slot::Rejected => 1,
            Slot::Base(k) => 2 + k,
        }
    }

    /// The sequence holding `slot` of example `example`.
    pub fn sequence(&self, example: usize, slot: Slot) -> usize {
        example * self.slots_per_example() + Self::slot_index(slot)
    }

    /// The sequences of `slots` for every example, slot-major: `slots[0]` of examples
    /// `0..B`, then `slots[1]` of examples `0..B`, …
    pub fn sequences(&self, slots: &[Slot]) -> Vec<usize> {
        slots
            .iter()
            .flat_map(|&slot| (0..self.size).map(move |i| (i, slot)))
            .map(|(i, slot)| self.sequence(i, slot))
            .collect()
    }

    /// The model input holding only `slots` of every example, numbered as
    /// [`sequences`](Self::sequences) lists them (slot-major): for a second model that
    /// needs only some responses (the reference of a token-level KL).
    pub fn restricted_to(&self, slots: &[Slot]) -> ScoringInput {
        let pad_id = match &self.input {
            ScoringInput::Shared(b) => b.pad_id,
            ScoringInput::Unshared(b) => b.pad_id,
        };
        // Slot-major numbering with one group per (slot, example) keeps the order; prompts
        // are then shared only within a slot, which is all a single slot allows.
        let groups = slots
            .iter()
            .flat_map(|&slot| {
                self.examples.iter().map(move |s| PromptGroup {
                    prompt: s.prompt.clone(),
                    completions: vec![s.responses[Self::slot_index(slot)].clone()],
                })
            })
            .collect();
        ScoringInput::build(groups, self.packing, pad_id)
    }
}

/// The example order of one epoch: shuffled from `seed` (and the epoch), or as given.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        // One stream per (seed, epoch), so resuming at any epoch reproduces its order.
        let mut rng = StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
    }
    order
}

/// Splits examples into (train, test) so that no entity is in both: entities (examples
/// without one count as their own entity) are shuffled from `seed` and the first ones go to
/// the test side until it holds at least `test_fraction` of the examples.
pub fn split_by_entity(
    examples: &[TokenizedExample],
    test_fraction: f64,
    seed: u64,
) -> (Vec<TokenizedExample>, Vec<TokenizedExample>) {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        let key = e
            .entity
            .clone()
            .unwrap_or_else(|| format!("\u{0}line {}", e.line));
        groups.entry(key).or_default().push(i);
    }
    let mut keys: Vec<&String> = groups.keys().collect();
    keys.shuffle(&mut StdRng::seed_from_u64(seed));
    let target = (test_fraction.clamp(0.0, 1.0) * examples.len() as f64).ceil() as usize;
    let mut test_rows = Vec::new();
    for key in keys {
        if test_rows.len() >= target {
            break;
        }
        test_rows.extend(&groups[key]);
    }
    test_rows.sort_unstable();
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (i, e) in examples.iter().enumerate() {
        if test_rows.binary_search(&i).is_ok() {
            test.push(e.clone());
        } else {
            train.push(e.clone());
        }
    }
    (train, test)
}
