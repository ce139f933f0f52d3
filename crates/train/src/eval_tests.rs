//! The evaluation's scoring, its LM heads run a chunk of tokens at a time, equals the
//! training path's scoring on full logits (`ScoredLogits` and `token_kl`, checked against TRL
//! by the objectives' parity tests): the log-probs of every response and the base response's
//! KL to a reference other than the policy, for several chunk sizes and batchings.

use std::path::PathBuf;

use bapo_data::{Packing, Slot, TokenizedExample};
use bapo_model::{CausalLm, PromptGroup, SharedPromptBatch, shared_sequence_logprobs};
use bapo_objective::KlDirection;
use burn::tensor::Device;

use super::{BatchLimits, score_groups, score_preferences, to_f64};
use crate::example::{AnchoredExample, ReferenceLogps};
use crate::step::{preference_batch, token_kl};

fn tiny_model(name: &str, device: &Device) -> CausalLm {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("../model/tests/fixtures/hf")
        .join(name);
    CausalLm::from_hf_dir(&dir, device)
        .expect("tiny fixture loads")
        .0
}

/// Four examples of different lengths, each with a base response.
fn examples() -> Vec<AnchoredExample> {
    let tokens = |seed: u32, n: usize| -> Vec<u32> {
        (0..n as u32)
            .map(|i| (seed * 37 + i * 11) % 120 + 3)
            .collect()
    };
    (0..4u32)
        .map(|e| AnchoredExample {
            tokens: TokenizedExample {
                prompt: tokens(e + 1, 3 + e as usize),
                chosen: tokens(e + 10, 2 + e as usize),
                rejected: tokens(e + 20, 5 - e as usize),
                base: None,
                user: None,
                entity: None,
                line: e as usize + 1,
            },
            base: vec![tokens(e + 30, 3 + 2 * e as usize)],
            reference: ReferenceLogps {
                chosen: -20.0,
                rejected: -22.0,
                base: vec![-9.0],
            },
            further_references: Vec::new(),
        })
        .collect()
}

/// Float rounding between batch shapes, and no more.
fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-6 + 1e-5 * want.abs(),
        "{what}: {got} against {want} on full logits"
    );
}

/// Chunks of 1 and 3 tokens, one chunk for everything, and (0) no chunking; one example per
/// forward and several.
const LIMITS: [BatchLimits; 4] = [
    BatchLimits {
        rows: 1,
        tokens: 10_000,
        head_chunk_tokens: 1,
    },
    BatchLimits {
        rows: 3,
        tokens: 10_000,
        head_chunk_tokens: 3,
    },
    BatchLimits {
        rows: 4,
        tokens: 10_000,
        head_chunk_tokens: 1_000,
    },
    BatchLimits {
        rows: 2,
        tokens: 10_000,
        head_chunk_tokens: 0,
    },
];

#[test]
fn chunked_preference_scoring_equals_full_logits() {
    let device = Device::flex();
    let policy = tiny_model("tiny-llama", &device);
    // A reference other than the policy, so that the KL is not zero.
    let reference = tiny_model("tiny-llama-tied", &device);
    let examples = examples();

    let all: Vec<&AnchoredExample> = examples.iter().collect();
    let batch = preference_batch(&all, 1, Packing::SharedPrompt, 0).expect("batch");
    let scored = batch.input.scored_logits(&policy, &device).expect("scores");
    let totals = to_f64(scored.logprobs(&device).total).expect("f64");
    let base = [Slot::Base(0)];
    let kl = token_kl(
        &scored,
        &batch.sequences(&base),
        &reference,
        &batch.restricted_to(&base),
        KlDirection::Reverse,
        &device,
    )
    .expect("kl");
    let kl = to_f64(kl).expect("f64");
    assert!(kl.iter().all(|&k| k > 1e-3), "the models differ: {kl:?}");

    for limits in LIMITS {
        let scores =
            score_preferences(&policy, &reference, &examples, limits, 0, &device).expect("eval");
        for (j, got) in scores.iter().enumerate() {
            let on = |what: &str| format!("{limits:?}, example {j}, {what}");
            let total = |slot| totals[batch.sequence(j, slot)];
            assert_close(&on("chosen"), got.chosen, total(Slot::Chosen));
            assert_close(&on("rejected"), got.rejected, total(Slot::Rejected));
            assert_close(&on("base"), got.base, total(Slot::Base(0)));
            assert_close(&on("base KL"), got.base_kl, kl[j]);
        }
    }
}

#[test]
fn chunked_choice_scoring_equals_full_logits() {
    let device = Device::flex();
    let policy = tiny_model("tiny-qwen2", &device);
    let groups: Vec<PromptGroup> = examples()
        .into_iter()
        .map(|e| PromptGroup {
            prompt: e.tokens.prompt,
            completions: vec![e.tokens.chosen, e.tokens.rejected, e.base[0].clone()],
        })
        .collect();
    let all = SharedPromptBatch {
        groups: groups.clone(),
        pad_id: 0,
    };
    let full = shared_sequence_logprobs(&policy, &all, &device).expect("scores");
    let full = to_f64(full.total).expect("f64");
    for limits in LIMITS {
        let scores = score_groups(&policy, &groups, limits, 0, &device).expect("eval");
        let got: Vec<f64> = scores.into_iter().flatten().collect();
        assert_eq!(got.len(), full.len());
        for (k, (&got, &want)) in got.iter().zip(&full).enumerate() {
            assert_close(&format!("{limits:?}, completion {k}"), got, want);
        }
    }
}
