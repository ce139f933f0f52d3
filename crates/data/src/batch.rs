//! Batches for the training loop, deterministic shuffling, and train/test splits by entity.
//!
//! A batch of `B` examples is **one** set of sequences for one policy forward: rows `0..B` are
//! prompt + chosen, `B..2B` prompt + rejected, and `2B..3B` prompt + base when every example
//! has a base response. Completion tokens are the scored ones; padding (to the right) is added
//! by the scorer.

use std::collections::BTreeMap;

use bapo_model::TokenBatch;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::tokenize::TokenizedExample;

/// One training batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceBatch {
    /// `[chosen; rejected(; base)]` sequences with their completion masks.
    pub sequences: TokenBatch,
    /// Examples in the batch (`B`).
    pub size: usize,
    /// Whether rows `2B..3B` hold base responses.
    pub has_base: bool,
    /// Source lines of the examples, in batch order.
    pub lines: Vec<usize>,
}

/// Builds the batch of `examples`; base rows are included only if every example has one.
pub fn make_batch(examples: &[&TokenizedExample], pad_id: u32) -> PreferenceBatch {
    let has_base = !examples.is_empty() && examples.iter().all(|e| e.base.is_some());
    let chosen = examples.iter().map(|e| (&e.prompt[..], &e.chosen[..]));
    let rejected = examples.iter().map(|e| (&e.prompt[..], &e.rejected[..]));
    let base = examples
        .iter()
        .filter(|_| has_base)
        .map(|e| (&e.prompt[..], e.base.as_deref().unwrap_or_default()));
    PreferenceBatch {
        sequences: TokenBatch::from_pairs(chosen.chain(rejected).chain(base), pad_id),
        size: examples.len(),
        has_base,
        lines: examples.iter().map(|e| e.line).collect(),
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
