//! Personalisation and forgetting, measured side by side (docs/evaluation.md):
//!
//! - **preference** (per user, held-out entities): TRL's implicit-reward accuracy — the share
//!   of pairs where `(pc − rc) > (pr − rr)` — and the mean margin `(pc − rc) − (pr − rr)` in
//!   nats; for the trained user this should rise, for users with opposite tastes it may fall;
//! - **anchor drift**: mean `pb − rb` on held-out base responses, the reference's own answers:
//!   negative means the policy now finds what it used to say less likely (BAPO's concern);
//! - **KL**: mean per-token KL(policy ‖ reference) over those base responses;
//! - **knowledge** (BIG-bench, log-likelihood scoring): `hhh_alignment` accuracy (preferred
//!   response more likely, as a two-choice question), `general_knowledge` and
//!   `misconceptions` multiple-choice accuracy, and the mean per-token log-prob of
//!   `qa_wikidata` fact completions;
//! - **multiple choice twice**: every multiple-choice set (hhh_alignment and the country probe
//!   included) is scored by the summed log-prob of each choice (lm-eval's `acc`) and by the
//!   log-prob per character (lm-eval's `acc_norm`, the `…_norm` metrics): when training lowers
//!   every token's log-prob, the summed score drifts toward the shortest choice whatever the
//!   knowledge;
//! - **generated answers** ([`crate::answers`]): the policy answers held-out prompts and fixed
//!   rules score the answer's style and fact.
//!
//! Each item's cluster (the entity it is about), chance level and flags go to
//! [`ItemLabels`], written once per run (`eval_item_labels.json`) for the study's intervals.
//!
//! Everything runs without autodiff on the plain device.

use std::collections::BTreeMap;

use bapo_data::{FactItem, MultipleChoiceItem, PreferenceItem};
use bapo_data::{Packing, PreferenceBatch, Slot};
use bapo_model::{
    CausalLm, CausalModel, LoadedModel, PromptGroup, ScoringLayout, SharedPromptBatch,
    chunked_target_logprobs,
};
use bapo_objective::KlDirection;
use bapo_objective::kl::{per_token_kl, sequence_means};
use burn::tensor::{Device, Tensor};

use crate::TrainError;
use crate::example::AnchoredExample;
use crate::items::{ItemLabels, ItemScores, TokenHasher};
use crate::step::{KlRows, index_tensor, preference_batch};

/// The evaluation sets, tokenised once.
#[derive(Debug, Clone, Default)]
pub struct EvalSets {
    /// Held-out preference examples (with the primary reference's anchors), per user.
    pub preferences: BTreeMap<String, Vec<AnchoredExample>>,
    /// BIG-bench's hhh_alignment, each item a two-choice question whose right answer is the
    /// preferred response.
    pub hhh: Vec<ChoiceTokens>,
    pub general_knowledge: Vec<ChoiceTokens>,
    pub misconceptions: Vec<ChoiceTokens>,
    /// (prompt, target) token ids.
    pub facts: Vec<CompletionTokens>,
    /// The country-knowledge probe: (kind, item), none about a trained country.
    pub country_facts: Vec<(String, ChoiceTokens)>,
    /// Held-out prompts the policy answers, and the rules that score the answers.
    pub answers: Option<crate::answers::AnswerSet>,
    /// What each metric's items are (cluster, chance, flags), in item order.
    pub labels: ItemLabels,
}

/// A (prompt, completion) item as token ids.
pub type CompletionTokens = (Vec<u32>, Vec<u32>);

/// A multiple-choice item as token ids.
#[derive(Debug, Clone)]
pub struct ChoiceTokens {
    pub prompt: Vec<u32>,
    pub choices: Vec<Vec<u32>>,
    /// Each choice's length in characters, as scored (leading space included): the divisor
    /// of lm-eval's `acc_norm`.
    pub choice_chars: Vec<usize>,
    pub correct: usize,
}

impl ChoiceTokens {
    /// Whether the choice of fewest characters (the first of equals) is the correct one.
    pub fn shortest_is_correct(&self) -> bool {
        let shortest = self
            .choice_chars
            .iter()
            .enumerate()
            .min_by_key(|(_, chars)| **chars)
            .map(|(i, _)| i);
        shortest == Some(self.correct)
    }
}

/// Token ids of `text`, or an error naming the set.
fn encode(model: &LoadedModel, text: &str, what: &str) -> Result<Vec<u32>, TrainError> {
    model.encode(text).map_err(|source| TrainError::EvalText {
        set: what.to_string(),
        source,
    })
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

impl ChoiceTokens {
    fn hash_into(&self, h: &mut TokenHasher) {
        h.ids(&self.prompt);
        h.number(self.choices.len() as u64);
        for (choice, chars) in self.choices.iter().zip(&self.choice_chars) {
            h.ids(choice);
            h.number(*chars as u64);
        }
        h.number(self.correct as u64);
    }
}

impl EvalSets {
    /// Tokens of every sequence one evaluation scores, counted as unshared rows (prompt +
    /// response per response, as training counts them), the reference's KL pass over the
    /// base responses included.
    pub fn sequence_tokens(&self) -> usize {
        let rows = |prompt: &[u32], completions: &[&[u32]]| -> usize {
            completions.iter().map(|c| prompt.len() + c.len()).sum()
        };
        let preferences: usize = self
            .preferences
            .values()
            .flatten()
            .map(|e| {
                let t = &e.tokens;
                let base = e.base.first().map_or(&[][..], Vec::as_slice);
                rows(&t.prompt, &[&t.chosen, &t.rejected, base, base])
            })
            .sum();
        let choices: usize = self
            .hhh
            .iter()
            .chain(&self.general_knowledge)
            .chain(&self.misconceptions)
            .chain(self.country_facts.iter().map(|(_, item)| item))
            .map(|i| {
                let choices: Vec<&[u32]> = i.choices.iter().map(Vec::as_slice).collect();
                rows(&i.prompt, &choices)
            })
            .sum();
        let facts: usize = self.facts.iter().map(|(p, t)| rows(p, &[t])).sum();
        preferences + choices + facts
    }

    /// sha256 of everything an evaluation scores: every set's token ids in order (with the
    /// held-out pairs' reference log-probs and base responses, which the preference metrics
    /// subtract and the KL scores) and the prompts and rules of the generated answers. Two
    /// evaluations of one policy on sets of equal digest compute the same numbers.
    pub fn digest(&self) -> String {
        let mut h = TokenHasher::new();
        h.number(self.preferences.len() as u64);
        for (user, examples) in &self.preferences {
            h.text(user);
            h.number(examples.len() as u64);
            for e in examples {
                let t = &e.tokens;
                for part in [&t.prompt, &t.chosen, &t.rejected] {
                    h.ids(part);
                }
                h.number(e.base.len() as u64);
                for base in &e.base {
                    h.ids(base);
                }
                let r = &e.reference;
                h.number(u64::from(r.chosen.to_bits()));
                h.number(u64::from(r.rejected.to_bits()));
                h.ids(&r.base.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
        }
        for set in [&self.hhh, &self.general_knowledge, &self.misconceptions] {
            h.number(set.len() as u64);
            for item in set {
                item.hash_into(&mut h);
            }
        }
        h.number(self.facts.len() as u64);
        for (prompt, target) in &self.facts {
            h.ids(prompt);
            h.ids(target);
        }
        h.number(self.country_facts.len() as u64);
        for (kind, item) in &self.country_facts {
            h.text(kind);
            item.hash_into(&mut h);
        }
        match &self.answers {
            None => h.number(0),
            Some(answers) => {
                h.number(1);
                answers.hash_into(&mut h);
            }
        }
        h.finish()
    }

    /// hhh_alignment's items as two-choice questions ([`PreferenceItem::two_choice`]).
    pub fn tokenize_hhh(
        model: &LoadedModel,
        items: &[PreferenceItem],
    ) -> Result<Vec<ChoiceTokens>, TrainError> {
        let questions: Vec<MultipleChoiceItem> =
            items.iter().map(PreferenceItem::two_choice).collect();
        Self::tokenize_choices(model, &questions, "hhh_alignment")
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
                    choice_chars: i
                        .choices
                        .iter()
                        .map(|c| continuation(c).chars().count())
                        .collect(),
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

/// How many rows one evaluation forward may hold: at most `rows`, and at most `tokens`
/// positions once padded to the longest row (one longer row still goes alone); and how many
/// scored tokens the LM head scores at a time (`head_chunk_tokens`, from
/// `training.lm_head_chunk_tokens`; 0: all of a forward's at once), so that an evaluation
/// never holds more logits than training does.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub rows: usize,
    pub tokens: usize,
    pub head_chunk_tokens: usize,
}

/// Indices of `lengths` sorted longest first, cut into batches within `limits`: similar
/// lengths share a batch, so little of each forward is padding, and one long item (a
/// 1,400-token BIG-bench dialogue) does not pad a whole batch to its length.
fn length_batches(lengths: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match batches.last_mut() {
            // Sorted longest first: the batch's first row sets its padded width.
            Some(batch)
                if batch.len() < limits.rows.max(1)
                    && (batch.len() + 1) * lengths[batch[0]] <= limits.tokens =>
            {
                batch.push(i)
            }
            _ => batches.push(vec![i]),
        }
    }
    batches
}

fn to_f64(t: burn::tensor::Tensor<1>) -> Result<Vec<f64>, TrainError> {
    t.into_data()
        .convert::<f64>()
        .try_to_vec::<f64>()
        .map_err(TrainError::TensorData)
}

/// Summed log-probs of every completion of every group after the group's prompt, the prompt
/// computed once per group, `batch` groups per forward.
fn score_groups(
    model: &CausalLm,
    groups: &[PromptGroup],
    batch: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Vec<f64>>, TrainError> {
    let mut out = vec![Vec::new(); groups.len()];
    let lengths: Vec<usize> = groups
        .iter()
        .map(|g| g.prompt.len() + g.completions.iter().map(Vec::len).sum::<usize>())
        .collect();
    for indices in length_batches(&lengths, batch) {
        let chunk = SharedPromptBatch {
            groups: indices.iter().map(|&i| groups[i].clone()).collect(),
            pad_id,
        };
        let layout = ScoringLayout::of_shared(&chunk).map_err(TrainError::EvalBatch)?;
        let scored = layout.chunked_sequence_logprobs(model, batch.head_chunk_tokens, device);
        let mut totals = to_f64(scored.total)?.into_iter();
        for &i in &indices {
            out[i] = totals.by_ref().take(groups[i].completions.len()).collect();
        }
    }
    Ok(out)
}

/// For held-out preference examples: the policy's log-probs of chosen, rejected and the
/// primary reference's base response, and the mean per-token KL(policy ‖ reference) on the
/// base response, batched within `limits`.
fn score_preferences(
    policy: &CausalLm,
    reference: &CausalLm,
    examples: &[AnchoredExample],
    limits: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<PreferenceScores>, TrainError> {
    let mut out = vec![PreferenceScores::default(); examples.len()];
    let lengths: Vec<usize> = examples
        .iter()
        .map(|e| {
            let t = &e.tokens;
            let base = e.base.first().map_or(0, Vec::len);
            t.prompt.len() + t.chosen.len() + t.rejected.len() + base
        })
        .collect();
    for indices in length_batches(&lengths, limits) {
        let chunk: Vec<&AnchoredExample> = indices.iter().map(|&i| &examples[i]).collect();
        let batch = preference_batch(&chunk, 1, Packing::SharedPrompt, pad_id)?;
        let head_chunk = limits.head_chunk_tokens;
        let (totals, kl) = totals_and_base_kl(policy, reference, &batch, head_chunk, device)?;
        for (j, &i) in indices.iter().enumerate() {
            out[i] = PreferenceScores {
                chosen: totals[batch.sequence(j, Slot::Chosen)],
                rejected: totals[batch.sequence(j, Slot::Rejected)],
                base: totals[batch.sequence(j, Slot::Base(0))],
                base_kl: kl[j],
            };
        }
    }
    Ok(out)
}

/// The policy's summed log-prob of every sequence of `batch`, and per example the mean
/// per-token KL(policy ‖ reference) on its first base response: the LM heads score
/// `head_chunk` tokens at a time (0: all at once), so that neither model's logits for the
/// whole batch exist at once.
fn totals_and_base_kl(
    policy: &CausalLm,
    reference: &CausalLm,
    batch: &PreferenceBatch,
    head_chunk: usize,
    device: &Device,
) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
    let layout = batch.input.layout().map_err(TrainError::EvalBatch)?;
    let base = [Slot::Base(0)];
    let sequences = batch.sequences(&base);
    if layout.scored_tokens() == 0 {
        let totals = layout.chunked_sequence_logprobs(policy, head_chunk, device);
        return Ok((to_f64(totals.total)?, vec![0.0; sequences.len()]));
    }
    let hidden = layout.predictor_rows(layout.hidden_states(policy, device));
    let token_logprobs =
        chunked_target_logprobs(policy, hidden.clone(), &layout.targets, head_chunk);
    let totals = to_f64(layout.sequence_logprobs(token_logprobs, device).total)?;

    let rows = KlRows::of(&layout.sequence, &sequences);
    if rows.owners.is_empty() {
        return Ok((totals, vec![0.0; sequences.len()]));
    }
    let reference_layout = batch
        .restricted_to(&base)
        .layout()
        .map_err(TrainError::EvalBatch)?;
    if reference_layout.sequence != rows.owners {
        return Err(TrainError::ReferenceMismatch);
    }
    let reference_hidden =
        reference_layout.predictor_rows(reference_layout.hidden_states(reference, device));
    let policy_hidden = hidden.select(0, index_tensor(&rows.policy_rows, device));
    let per_token = chunked_token_kl(
        (policy, policy_hidden),
        (reference, reference_hidden),
        head_chunk,
    );
    let kl = sequence_means(per_token, &rows.owners, sequences.len());
    Ok((totals, to_f64(kl)?))
}

/// The reverse KL(policy ‖ reference) of every row, `[n]`, from each model's final hidden
/// states `[n, width]` of the same tokens, through both LM heads `chunk` rows at a time (0:
/// all at once).
fn chunked_token_kl(
    (policy, policy_rows): (&CausalLm, Tensor<2>),
    (reference, reference_rows): (&CausalLm, Tensor<2>),
    chunk: usize,
) -> Tensor<1> {
    let [n, _] = policy_rows.dims();
    let chunk = if chunk == 0 { n.max(1) } else { chunk };
    let parts: Vec<Tensor<1>> = (0..n)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(n - start);
            let logits = |model: &CausalLm, rows: &Tensor<2>| {
                let logits = model.logits(rows.clone().narrow(0, start, len));
                let [_, vocab] = logits.dims();
                logits.reshape([1, len, vocab])
            };
            let kl = per_token_kl(
                logits(policy, &policy_rows),
                logits(reference, &reference_rows),
                KlDirection::Reverse,
            );
            kl.reshape([len])
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// The policy's numbers on one held-out preference example.
#[derive(Debug, Clone, Copy, Default)]
struct PreferenceScores {
    chosen: f64,
    rejected: f64,
    base: f64,
    base_kl: f64,
}

/// Margins (nats) below this are ties: f32 rounding between batch shapes is ~1e-5.
const TIE_NATS: f64 = 1e-4;

/// Every metric of one evaluation, by name (`pref/<user>/accuracy`, `knowledge/…`, …).
pub type EvalResult = BTreeMap<String, f64>;

/// One evaluation: each metric (the mean over its items) and the items themselves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub metrics: EvalResult,
    pub items: ItemScores,
}

impl Evaluation {
    /// The evaluation whose metrics are the means of `items`.
    pub(crate) fn from_items(items: ItemScores) -> Evaluation {
        let metrics = items
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(name, values)| (name.clone(), mean(values)))
            .collect();
        Evaluation { metrics, items }
    }
}

/// 1 for a success, 0 for a failure: accuracies are means of these.
fn indicator(flag: bool) -> f64 {
    if flag { 1.0 } else { 0.0 }
}

/// Runs every evaluation of `sets` on `policy` (plain device), with `reference` for the KL.
pub fn evaluate(
    policy: &CausalLm,
    reference: &CausalLm,
    sets: &EvalSets,
    batch: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let on = Scoring {
        policy,
        batch,
        pad_id,
        device,
    };
    let mut items = ItemScores::new();
    for (user, examples) in &sets.preferences {
        if !examples.is_empty() {
            on.preferences(reference, user, examples, &mut items)?;
        }
    }
    for (name, set) in [
        ("knowledge/hhh_alignment", &sets.hhh),
        ("knowledge/general_knowledge", &sets.general_knowledge),
        ("knowledge/misconceptions", &sets.misconceptions),
    ] {
        if !set.is_empty() {
            let chosen = on.choose(set)?;
            items.insert(
                name.into(),
                chosen.iter().map(|c| indicator(c.summed)).collect(),
            );
            items.insert(
                format!("{name}_norm"),
                chosen.iter().map(|c| indicator(c.per_char)).collect(),
            );
        }
    }
    if !sets.country_facts.is_empty() {
        on.country_facts(&sets.country_facts, &mut items)?;
    }
    if !sets.facts.is_empty() {
        items.insert("knowledge/facts_logp".into(), on.facts(&sets.facts)?);
    }
    if let Some(answers) = &sets.answers {
        answers.evaluate(policy, device, &mut items)?;
    }
    Ok(Evaluation::from_items(items))
}

/// The policy an evaluation scores, with how it batches.
struct Scoring<'a> {
    policy: &'a CausalLm,
    batch: BatchLimits,
    pad_id: u32,
    device: &'a Device,
}

impl Scoring<'_> {
    /// A user's held-out preferences: accuracy and margin against the reference, the
    /// reference's own margin, and the drift and KL on the reference's answer.
    fn preferences(
        &self,
        reference: &CausalLm,
        user: &str,
        examples: &[AnchoredExample],
        items: &mut ItemScores,
    ) -> Result<(), TrainError> {
        let scores = score_preferences(
            self.policy,
            reference,
            examples,
            self.batch,
            self.pad_id,
            self.device,
        )?;
        for (e, score) in examples.iter().zip(&scores) {
            let r = &e.reference;
            let chosen = score.chosen - f64::from(r.chosen);
            let rejected = score.rejected - f64::from(r.rejected);
            // A margin within rounding of 0 is a tie, not a win: before training the policy
            // is the reference, and its log-probs differ from the cached ones only by float
            // noise (other batch shapes), which must not count as preference accuracy.
            let mut push = |name: String, value: f64| items.entry(name).or_default().push(value);
            push(
                format!("pref/{user}/accuracy"),
                indicator(chosen - rejected > TIE_NATS),
            );
            push(format!("pref/{user}/margin"), chosen - rejected);
            // How far this user's choices are from what the reference prefers (the study's
            // heterogeneity): the reference's own log-prob margin, the same at every step.
            push(
                format!("pref/{user}/reference_margin"),
                f64::from(r.chosen) - f64::from(r.rejected),
            );
            // The reference's own answer (the one scored): drift of its log-prob, and the KL
            // on it.
            if let Some(&base) = r.base.first() {
                push("anchor/drift".into(), score.base - f64::from(base));
                push("kl/heldout".into(), score.base_kl);
            }
        }
        Ok(())
    }

    /// Per multiple-choice item, whether its correct choice is the most likely.
    fn choose<'a>(
        &self,
        set: impl IntoIterator<Item = &'a ChoiceTokens>,
    ) -> Result<Vec<Choice>, TrainError> {
        choose(self.policy, set, self.batch, self.pad_id, self.device)
    }

    /// The country-knowledge probe: accuracy in all, and per kind (capital, subregion,
    /// border).
    fn country_facts(
        &self,
        set: &[(String, ChoiceTokens)],
        items: &mut ItemScores,
    ) -> Result<(), TrainError> {
        let chosen = self.choose(set.iter().map(|(_, item)| item))?;
        for ((kind, _), choice) in set.iter().zip(&chosen) {
            for name in [
                "knowledge/country_facts".to_string(),
                format!("knowledge/country_{kind}"),
            ] {
                items
                    .entry(format!("{name}_norm"))
                    .or_default()
                    .push(indicator(choice.per_char));
                items
                    .entry(name)
                    .or_default()
                    .push(indicator(choice.summed));
            }
        }
        Ok(())
    }

    /// Per fact, the log-prob of its target per target token.
    fn facts(&self, set: &[CompletionTokens]) -> Result<Vec<f64>, TrainError> {
        let groups: Vec<PromptGroup> = set
            .iter()
            .map(|(p, t)| PromptGroup {
                prompt: p.clone(),
                completions: vec![t.clone()],
            })
            .collect();
        let scores = score_groups(self.policy, &groups, self.batch, self.pad_id, self.device)?;
        Ok(scores
            .iter()
            .zip(set)
            .map(|(logp, (_, target))| logp[0] / target.len().max(1) as f64)
            .collect())
    }
}

/// Whether a multiple-choice item's correct choice wins, by the two rules lm-eval reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// By the summed log-prob of each choice (`acc`): favours short choices once training
    /// lowers every token's log-prob.
    pub summed: bool,
    /// By the log-prob per character of each choice (`acc_norm`).
    pub per_char: bool,
}

/// Which choice the summed and the per-character log-probs pick, from each choice's summed
/// log-prob and length in characters: whether each is `correct`.
pub fn pick(logps: &[f64], chars: &[usize], correct: usize) -> Choice {
    let argmax = |score: &dyn Fn(usize) -> f64| {
        (0..logps.len())
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .is_some_and(|best| best == correct)
    };
    Choice {
        summed: argmax(&|i| logps[i]),
        per_char: argmax(&|i| logps[i] / chars[i].max(1) as f64),
    }
}

/// For every multiple-choice item, whether the policy finds its correct choice the most
/// likely, summed and per character (every choice after one shared question).
pub(crate) fn choose<'a>(
    policy: &CausalLm,
    items: impl IntoIterator<Item = &'a ChoiceTokens>,
    batch: BatchLimits,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Choice>, TrainError> {
    let items: Vec<&ChoiceTokens> = items.into_iter().collect();
    let groups: Vec<PromptGroup> = items
        .iter()
        .map(|i| PromptGroup {
            prompt: i.prompt.clone(),
            completions: i.choices.clone(),
        })
        .collect();
    let scores = score_groups(policy, &groups, batch, pad_id, device)?;
    Ok(items
        .iter()
        .zip(&scores)
        .map(|(item, own)| pick(own, &item.choice_chars, item.correct))
        .collect())
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
                // Below the printed precision a change is 0, whatever its float sign.
                Some(end_value - start_value)
                    .filter(|c| c.abs() >= 5e-5)
                    .unwrap_or(0.0)
            ),
            // No evaluation before training (`eval.at_start = false`).
            None => format!("| {label} | n/a | {end_value:.4} | n/a |\n"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token id, reference log-prob and item an evaluation scores changes the sets'
    /// digest (so a stored evaluation before training is never reused for other sets), and so
    /// does a token moved across a boundary between two parts.
    #[test]
    fn the_digest_sees_every_set() {
        let example = AnchoredExample {
            tokens: bapo_data::TokenizedExample {
                prompt: vec![1, 2],
                chosen: vec![3],
                rejected: vec![4, 5],
                base: None,
                user: Some("u".into()),
                entity: None,
                line: 1,
            },
            base: vec![vec![6, 7]],
            reference: crate::example::ReferenceLogps {
                chosen: -1.0,
                rejected: -2.0,
                base: vec![-3.0],
            },
            further_references: Vec::new(),
        };
        let choice = ChoiceTokens {
            prompt: vec![1],
            choices: vec![vec![2], vec![3]],
            choice_chars: vec![2, 2],
            correct: 0,
        };
        let mut sets = EvalSets::default();
        sets.preferences.insert("u".into(), vec![example]);
        sets.hhh.push(choice.clone());
        sets.general_knowledge.push(choice.clone());
        sets.misconceptions.push(choice.clone());
        sets.facts.push((vec![1], vec![2]));
        sets.country_facts.push(("capital".into(), choice));
        let digest = sets.digest();
        assert_eq!(digest, sets.clone().digest(), "a function of the sets");

        type Change = fn(&mut EvalSets);
        fn pair(s: &mut EvalSets) -> &mut AnchoredExample {
            &mut s.preferences.get_mut("u").unwrap()[0]
        }
        let changes: [(&str, Change); 14] = [
            ("prompt", |s| pair(s).tokens.prompt[0] = 9),
            ("chosen", |s| pair(s).tokens.chosen[0] = 9),
            ("rejected", |s| pair(s).tokens.rejected[1] = 9),
            ("a token moved from rejected to chosen", |s| {
                let t = &mut pair(s).tokens;
                t.chosen.push(t.rejected.remove(0));
            }),
            ("base response", |s| pair(s).base[0][1] = 9),
            ("reference log-prob", |s| pair(s).reference.rejected = -2.5),
            ("reference log-prob of the base response", |s| {
                pair(s).reference.base[0] = -3.5
            }),
            ("user", |s| {
                let e = s.preferences.remove("u").unwrap();
                s.preferences.insert("v".into(), e);
            }),
            ("hhh's worse answer", |s| s.hhh[0].choices[1][0] = 9),
            ("general knowledge's answer", |s| {
                s.general_knowledge[0].correct = 1
            }),
            ("misconceptions' choice", |s| {
                s.misconceptions[0].choices[1][0] = 9
            }),
            ("qa_wikidata", |s| s.facts[0].1.push(9)),
            ("country probe's kind", |s| {
                s.country_facts[0].0 = "border".into()
            }),
            ("country probe's lengths", |s| {
                s.country_facts[0].1.choice_chars[0] = 3
            }),
        ];
        for (what, change) in changes {
            let mut changed = sets.clone();
            change(&mut changed);
            assert_ne!(changed.digest(), digest, "{what}");
        }
    }

    /// A long right answer and a short wrong one, after training lowered every token: the
    /// summed log-prob picks the short one, the per-character one the right one.
    #[test]
    fn per_character_choice_undoes_the_length_bias() {
        // Right: 20 characters at −0.5 each; wrong: 5 characters at −0.8 each.
        let chosen = pick(&[-10.0, -4.0], &[20, 5], 0);
        assert_eq!(
            chosen,
            Choice {
                summed: false,
                per_char: true
            }
        );
        // Equal lengths: both rules agree.
        assert_eq!(
            pick(&[-3.0, -4.0], &[6, 6], 0),
            Choice {
                summed: true,
                per_char: true
            }
        );
    }

    #[test]
    fn the_shortest_choice_is_found_by_characters() {
        let item = |chars: Vec<usize>, correct| ChoiceTokens {
            prompt: vec![1],
            choices: vec![vec![2]; chars.len()],
            choice_chars: chars,
            correct,
        };
        assert!(item(vec![9, 4, 7], 1).shortest_is_correct());
        assert!(!item(vec![9, 4, 7], 2).shortest_is_correct());
        // The first of equals.
        assert!(item(vec![4, 4], 0).shortest_is_correct());
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod chunk_tests;
