//! [`AnchoredExample`]: a tokenised preference example with what its references computed for
//! it. prepare.rs builds them from the anchor cache; the step, the evaluation and the bench
//! read them.

use bapo_anchors::ExampleAnchors;
use bapo_data::TokenizedExample;

/// A training (or held-out) example with its base responses and reference log-probs.
#[derive(Debug, Clone)]
pub struct AnchoredExample {
    pub tokens: TokenizedExample,
    /// The reference's own responses to the prompt (BAPO's anchors), token ids ending with EOS
    /// unless cut by `anchors.max_new_tokens`. Empty when the objective uses none.
    pub base: Vec<Vec<u32>>,
    /// What the reference (the model the run starts from) computed.
    pub reference: ReferenceLogps,
    /// What each of `model.references` computed, in order (MRPO's further references).
    pub further_references: Vec<ReferenceLogps>,
}

/// One reference's summed log-probs of an example's responses.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceLogps {
    pub chosen: f32,
    pub rejected: f32,
    /// One per base response of [`AnchoredExample::base`]; empty for the further references,
    /// which score the chosen and rejected responses only.
    pub base: Vec<f32>,
}

impl AnchoredExample {
    /// `tokens` with the anchor cache's entries for it: the reference's (with the base
    /// responses) and the further references'.
    pub fn new<'a>(
        tokens: TokenizedExample,
        reference: ExampleAnchors,
        further: impl IntoIterator<Item = &'a ExampleAnchors>,
    ) -> AnchoredExample {
        AnchoredExample {
            tokens,
            reference: ReferenceLogps::from(&reference),
            base: reference.base,
            further_references: further.into_iter().map(ReferenceLogps::from).collect(),
        }
    }

    /// Reference `k`: 0 is the model the run starts from, `k` ≥ 1 the `k`-th of
    /// `model.references`.
    pub fn reference(&self, k: usize) -> Option<&ReferenceLogps> {
        match k {
            0 => Some(&self.reference),
            _ => self.further_references.get(k - 1),
        }
    }

    /// How many references computed log-probs for it.
    pub fn reference_count(&self) -> usize {
        1 + self.further_references.len()
    }
}

impl From<&ExampleAnchors> for ReferenceLogps {
    fn from(a: &ExampleAnchors) -> ReferenceLogps {
        ReferenceLogps {
            chosen: a.chosen_logp,
            rejected: a.rejected_logp,
            base: a.base_logps.clone(),
        }
    }
}
