//! Personalisation and forgetting, measured side by side (docs/evaluation.md):
//!
//! - **preference** (per user, held-out entities): TRL's implicit-reward accuracy — the share
//!   of pairs where `(pc − rc) > (pr − rr)` — and the mean margin `(pc − rc) − (pr − rr)` in
//!   nats; for the trained user this should rise, for users with opposite tastes it may fall;
//! - **anchor drift**: mean `pb − rb` on held-out base responses, the reference's own answers:
//!   negative means the policy now finds what it used to say less likely (BAPO's concern);
//! - **KL**: mean per-token KL(policy ‖ reference) over those base responses;
//! - **knowledge** (BIG-bench, log-likelihood scoring): `hhh_alignment` accuracy (preferred
//!   response more likely), `general_knowledge` and `misconceptions` multiple-choice accuracy,
//!   and the mean per-token log-prob of `qa_wikidata` fact completions.
//!
//! Everything runs without autodiff on the plain device.

use std::collections::BTreeMap;

use bapo_data::{FactItem, MultipleChoiceItem, PreferenceItem};
use bapo_model::{CausalLm, LoadedModel, TokenBatch, scored_logits, sequence_logprobs};
use bapo_objective::KlDirection;
use burn::tensor::Device;

use crate::TrainError;
use crate::step::{AnchoredExample, token_kl};

/// The evaluation sets, tokenised once.
#[derive(Debug, Clone, Default)]
pub struct EvalSets {
    /// Held-out preference examples (with the primary reference's anchors), per user.
    pub preferences: BTreeMap<String, Vec<AnchoredExample>>,
    /// (prompt, preferred, dispreferred) token ids.
    pub hhh: Vec<PairTokens>,
    pub general_knowledge: Vec<ChoiceTokens>,
    pub misconceptions: Vec<ChoiceTokens>,
    /// (prompt, target) token ids.
    pub facts: Vec<CompletionTokens>,
}

/// A (prompt, preferred, dispreferred) item as token ids.
pub type PairTokens = (Vec<u32>, Vec<u32>, Vec<u32>);
/// A (prompt, completion) item as token ids.
pub type CompletionTokens = (Vec<u32>, Vec<u32>);

/// A multiple-choice item as token ids.
#[derive(Debug, Clone)]
pub struct ChoiceTokens {
    pub prompt: Vec<u32>,
    pub choices: Vec<Vec<u32>>,
    pub correct: usize,
}

/// Token ids of `text`, or an error naming the set.
fn encode(model: &LoadedModel, text: &str, what: &str) -> Result<Vec<u32>, TrainError> {
    model
        .encode(text)
        .map_err(|e| TrainError::Eval(format!("{what}: {e}")))
}

/// Prompt and completion of log-likelihood scoring: the completion starts with a space, the
/// way a continuation of the prompt is written.
fn continuation(text: &str) -> String {
    if text.starts_with(' ') {
        text.to_string()
    } else {
        format!(" {text}")
    }
}

impl EvalSets {
    pub fn tokenize_hhh(
        model: &LoadedModel,
        items: &[PreferenceItem],
    ) -> Result<Vec<PairTokens>, TrainError> {
        items
            .iter()
            .map(|i| {
                Ok((
                    encode(model, &i.prompt, "hhh_alignment")?,
                    encode(model, &continuation(&i.preferred), "hhh_alignment")?,
                    encode(model, &continuation(&i.dispreferred), "hhh_alignment")?,
                ))
            })
            .collect()
    }

    pub fn tokenize_choices(
        model: &LoadedModel,
        items: &[MultipleChoiceItem],
        what: &str,
    ) -> Result<Vec<ChoiceTokens>, TrainError> {
        items
            .iter()
            .map(|i| {
                Ok(ChoiceTokens {
                    prompt: encode(model, &i.question, what)?,
                    choices: i
                        .choices
                        .iter()
                        .map(|c| encode(model, &continuation(c), what))
                        .collect::<Result<_, _>>()?,
                    correct: i.correct,
                })
            })
            .collect()
    }

    pub fn tokenize_facts(
        model: &LoadedModel,
        items: &[FactItem],
    ) -> Result<Vec<CompletionTokens>, TrainError> {
        items
            .iter()
            .filter_map(|i| i.targets.first().map(|t| (i, t)))
            .map(|(i, t)| {
                Ok((
                    encode(model, &i.prompt, "qa_wikidata")?,
                    encode(model, &continuation(t), "qa_wikidata")?,
                ))
            })
            .collect()
    }
}

fn pair_batch(pairs: &[(&[u32], &[u32])], pad_id: u32) -> TokenBatch {
    TokenBatch::from_pairs(pairs.iter().copied(), pad_id)
}

/// Pair indices sorted by length, cut into batches of `batch`: similar lengths share a batch,
/// so little of each forward is padding.
fn length_batches(pairs: &[(&[u32], &[u32])], batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| pairs[i].0.len() + pairs[i].1.len());
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

fn to_f64(t: burn::tensor::Tensor<1>) -> Result<Vec<f64>, TrainError> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(|e| TrainError::Eval(format!("{e:?}")))
}

/// Summed log-probs of `completion` after `prompt` for every pair (with the completion's
/// length), in batches of `batch`.
fn score_pairs(
    model: &CausalLm,
    pairs: &[(&[u32], &[u32])],
    batch: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<(f64, usize)>, TrainError> {
    let mut out = vec![(0.0, 0); pairs.len()];
    for indices in length_batches(pairs, batch) {
        let chunk: Vec<(&[u32], &[u32])> = indices.iter().map(|&i| pairs[i]).collect();
        let totals = sequence_logprobs(model, &pair_batch(&chunk, pad_id), device)
            .map_err(|e| TrainError::Eval(e.to_string()))?
            .total;
        for (&i, value) in indices.iter().zip(to_f64(totals)?) {
            out[i] = (value, pairs[i].1.len());
        }
    }
    Ok(out)
}

/// Log-probs and mean per-token KL(policy ‖ reference) of every pair, from one policy forward
/// per batch (the reference runs on the same rows).
fn score_pairs_with_kl(
    policy: &CausalLm,
    reference: &CausalLm,
    pairs: &[(&[u32], &[u32])],
    batch: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<(f64, f64)>, TrainError> {
    let mut out = vec![(0.0, 0.0); pairs.len()];
    for indices in length_batches(pairs, batch) {
        let chunk: Vec<(&[u32], &[u32])> = indices.iter().map(|&i| pairs[i]).collect();
        let tokens = pair_batch(&chunk, pad_id);
        let logits =
            scored_logits(policy, &tokens, device).map_err(|e| TrainError::Eval(e.to_string()))?;
        let totals = to_f64(logits.logprobs(device).total)?;
        let kl = token_kl(
            &logits,
            &tokens,
            0..chunk.len(),
            reference,
            KlDirection::Reverse,
            device,
        )?;
        for ((&i, logp), kl) in indices.iter().zip(totals).zip(to_f64(kl)?) {
            out[i] = (logp, kl);
        }
    }
    Ok(out)
}

/// Margins (nats) below this are ties: f32 rounding between batch shapes is ~1e-5.
const TIE_NATS: f64 = 1e-4;

/// Every metric of one evaluation, by name (`pref/<user>/accuracy`, `knowledge/…`, …).
pub type EvalResult = BTreeMap<String, f64>;

/// Runs every evaluation of `sets` on `policy` (plain device), with `reference` for the KL.
pub fn evaluate(
    policy: &CausalLm,
    reference: &CausalLm,
    sets: &EvalSets,
    batch: usize,
    pad_id: u32,
    device: &Device,
) -> Result<EvalResult, TrainError> {
    let mut result = EvalResult::new();
    let mut drift_all = Vec::new();
    let mut kl_all = Vec::new();
    for (user, examples) in &sets.preferences {
        if examples.is_empty() {
            continue;
        }
        let mut pairs: Vec<(&[u32], &[u32])> = Vec::new();
        for e in examples {
            pairs.push((&e.tokens.prompt, &e.tokens.chosen));
            pairs.push((&e.tokens.prompt, &e.tokens.rejected));
        }
        let scores = score_pairs(policy, &pairs, batch, pad_id, device)?;
        // The reference's own answers: drift of their log-prob, and the KL on them.
        let base: Vec<(&[u32], &[u32])> = examples
            .iter()
            .map(|e| (&e.tokens.prompt[..], &e.anchors[0].base[0][..]))
            .collect();
        let base_scores = score_pairs_with_kl(policy, reference, &base, batch, pad_id, device)?;
        let (mut correct, mut margin) = (0usize, 0.0);
        for (i, e) in examples.iter().enumerate() {
            let a = &e.anchors[0];
            let chosen = scores[2 * i].0 - f64::from(a.chosen_logp);
            let rejected = scores[2 * i + 1].0 - f64::from(a.rejected_logp);
            // A margin within rounding of 0 is a tie, not a win: before training the policy
            // is the reference, and its log-probs differ from the cached ones only by float
            // noise (other batch shapes), which must not count as preference accuracy.
            correct += usize::from(chosen - rejected > TIE_NATS);
            margin += chosen - rejected;
            drift_all.push(base_scores[i].0 - f64::from(a.base_logps[0]));
            kl_all.push(base_scores[i].1);
        }
        let n = examples.len() as f64;
        result.insert(format!("pref/{user}/accuracy"), correct as f64 / n);
        result.insert(format!("pref/{user}/margin"), margin / n);
    }
    if !drift_all.is_empty() {
        result.insert("anchor/drift".into(), mean(&drift_all));
        result.insert("kl/heldout".into(), mean(&kl_all));
    }

    if !sets.hhh.is_empty() {
        let pairs: Vec<(&[u32], &[u32])> = sets
            .hhh
            .iter()
            .flat_map(|(p, a, b)| [(&p[..], &a[..]), (&p[..], &b[..])])
            .collect();
        let scores = score_pairs(policy, &pairs, batch, pad_id, device)?;
        let wins = scores.chunks(2).filter(|s| s[0].0 > s[1].0).count();
        result.insert(
            "knowledge/hhh_alignment".into(),
            wins as f64 / sets.hhh.len() as f64,
        );
    }
    for (name, items) in [
        ("knowledge/general_knowledge", &sets.general_knowledge),
        ("knowledge/misconceptions", &sets.misconceptions),
    ] {
        if items.is_empty() {
            continue;
        }
        let pairs: Vec<(&[u32], &[u32])> = items
            .iter()
            .flat_map(|i| i.choices.iter().map(|c| (&i.prompt[..], &c[..])))
            .collect();
        let scores = score_pairs(policy, &pairs, batch, pad_id, device)?;
        let mut offset = 0;
        let mut correct = 0;
        for item in items.iter() {
            let own = &scores[offset..offset + item.choices.len()];
            offset += item.choices.len();
            let best = own
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.0.total_cmp(&b.1.0))
                .map(|(i, _)| i);
            correct += usize::from(best == Some(item.correct));
        }
        result.insert(name.into(), correct as f64 / items.len() as f64);
    }
    if !sets.facts.is_empty() {
        let pairs: Vec<(&[u32], &[u32])> =
            sets.facts.iter().map(|(p, t)| (&p[..], &t[..])).collect();
        let scores = score_pairs(policy, &pairs, batch, pad_id, device)?;
        let per_token: Vec<f64> = scores
            .iter()
            .map(|(logp, n)| logp / (*n).max(1) as f64)
            .collect();
        result.insert("knowledge/facts_logp".into(), mean(&per_token));
    }
    Ok(result)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The start-versus-end table, as Markdown.
pub fn comparison_table(
    start: &EvalResult,
    end: &EvalResult,
    trained_user: Option<&str>,
) -> String {
    let mut out = String::from("| metric | start | end | change |\n|---|---:|---:|---:|\n");
    for (name, end_value) in end {
        let start_value = start.get(name).copied();
        let label = match trained_user {
            Some(user) if name.starts_with(&format!("pref/{user}/")) => format!("{name} (trained)"),
            _ => name.clone(),
        };
        out.push_str(&match start_value {
            Some(start_value) => format!(
                "| {label} | {start_value:.4} | {end_value:.4} | {:+.4} |\n",
                end_value - start_value
            ),
            // No evaluation before training (`eval.at_start = false`).
            None => format!("| {label} | n/a | {end_value:.4} | n/a |\n"),
        });
    }
    out
}
