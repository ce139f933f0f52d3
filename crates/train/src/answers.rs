//! Personalisation measured on what the policy *writes*: it answers every held-out prompt
//! (greedy, so the same policy always writes the same answer), and rules fixed before any run
//! (`bapo_dataset::answers`) score each answer against every user's held-out pair on that
//! prompt:
//!
//! - `answer/<user>/style`: 1 when the answer has the user's chosen style, 0 the rejected one
//!   — by length in tokens for pairs that differ in length (concise and detailed; ½ on an
//!   exact tie), by register for pairs that differ in register (casual and formal); pairs with
//!   neither (a right and a wrong fact in one style) are not scored;
//! - `answer/<user>/fact`: 1 when the answer states the pair's fact (and not a wrong one);
//! - `answer/length`: the answer's length in tokens, per prompt.
//!
//! The implicit-reward accuracy (`pref/<user>/accuracy`) says what the policy *prefers* between
//! two given answers; these say what it says unprompted.

use std::collections::BTreeMap;

use bapo_dataset::answers::{Axis, Tokens, axis, fact_right, style_score};
use bapo_model::{CausalLm, GenerationConfig, ModelError, Sampling, generate};
use burn::tensor::Device;
use tokenizers::Tokenizer;

use crate::TrainError;
use crate::example::AnchoredExample;
use crate::items::{ItemLabels, ItemScores, TokenHasher};

/// The held-out prompts the policy answers and the pairs each answer is scored against.
#[derive(Debug, Clone)]
pub struct AnswerSet {
    /// Each distinct held-out prompt once (users share prompts), chat template applied.
    prompts: Vec<Vec<u32>>,
    /// Per user, the pairs scored, in held-out order.
    pairs: BTreeMap<String, Vec<ScoredPair>>,
    tokenizer: Tokenizer,
    generation: GenerationConfig,
}

/// One held-out pair, as the rules need it.
#[derive(Debug, Clone)]
struct ScoredPair {
    /// Index into [`AnswerSet::prompts`].
    prompt: usize,
    axis: Axis,
    chosen: Response,
    rejected: Response,
}

/// A response's text (without its end-of-sequence token) and its length in tokens.
#[derive(Debug, Clone)]
struct Response {
    text: String,
    tokens: usize,
}

impl AnswerSet {
    /// The answer set of the held-out `preferences`: at most `max_new_tokens` per answer,
    /// generation ending at `eos`. Returns it with the labels of its metrics (each item's
    /// entity as its cluster).
    pub fn new(
        preferences: &BTreeMap<String, Vec<AnchoredExample>>,
        tokenizer: &Tokenizer,
        max_new_tokens: usize,
        (eos, pad): (u32, u32),
    ) -> Result<(AnswerSet, ItemLabels), TrainError> {
        let mut prompts: Vec<Vec<u32>> = Vec::new();
        let mut prompt_entities: Vec<String> = Vec::new();
        let mut pairs = BTreeMap::new();
        let mut labels = ItemLabels::new();
        let response = |tokens: &[u32]| -> Result<Response, TrainError> {
            let content = without_eos(tokens, eos);
            Ok(Response {
                text: decode(tokenizer, content)?,
                tokens: content.len(),
            })
        };
        for (user, examples) in preferences {
            let mut scored = Vec::new();
            for e in examples {
                let t = &e.tokens;
                let prompt = match prompts.iter().position(|p| *p == t.prompt) {
                    Some(i) => i,
                    None => {
                        prompts.push(t.prompt.clone());
                        prompt_entities.push(t.entity.clone().unwrap_or_default());
                        prompts.len() - 1
                    }
                };
                let (chosen, rejected) = (response(&t.chosen)?, response(&t.rejected)?);
                let axis = axis(&chosen.text, &rejected.text, chosen.tokens, rejected.tokens);
                let cluster = t.entity.clone().unwrap_or_default();
                if axis != Axis::None {
                    labels
                        .entry(format!("answer/{user}/style"))
                        .or_default()
                        .cluster
                        .push(cluster.clone());
                }
                // `None` whatever the answer: the pair names no fact the rules can check.
                if fact_right("", &chosen.text, &rejected.text).is_some() {
                    labels
                        .entry(format!("answer/{user}/fact"))
                        .or_default()
                        .cluster
                        .push(cluster);
                }
                scored.push(ScoredPair {
                    prompt,
                    axis,
                    chosen,
                    rejected,
                });
            }
            pairs.insert(user.clone(), scored);
        }
        labels.entry("answer/length".into()).or_default().cluster = prompt_entities;
        let generation = GenerationConfig {
            max_new_tokens,
            sampling: Sampling::default(),
            stop_tokens: vec![eos],
            pad_token: pad,
            ..GenerationConfig::default()
        };
        Ok((
            AnswerSet {
                prompts,
                pairs,
                tokenizer: tokenizer.clone(),
                generation,
            },
            labels,
        ))
    }

    /// Feeds the prompts, the generation settings and every scored pair into `h` (what the
    /// answers' metrics depend on besides the policy).
    pub(crate) fn hash_into(&self, h: &mut TokenHasher) {
        h.number(self.prompts.len() as u64);
        for prompt in &self.prompts {
            h.ids(prompt);
        }
        h.text(&format!("{:?}", self.generation));
        h.number(self.pairs.len() as u64);
        for (user, pairs) in &self.pairs {
            h.text(user);
            h.number(pairs.len() as u64);
            for pair in pairs {
                h.number(pair.prompt as u64);
                h.text(&format!("{:?}", pair.axis));
                for response in [&pair.chosen, &pair.rejected] {
                    h.text(&response.text);
                    h.number(response.tokens as u64);
                }
            }
        }
    }

    /// Distinct prompts answered per evaluation.
    pub fn prompt_count(&self) -> usize {
        self.prompts.len()
    }

    /// The policy's answers to every prompt, scored into `items`.
    pub fn evaluate(
        &self,
        policy: &CausalLm,
        device: &Device,
        items: &mut ItemScores,
    ) -> Result<(), TrainError> {
        let generated = generate(policy, &self.prompts, &self.generation, device, |_, _| {})?;
        let eos = self.generation.stop_tokens[0];
        let answers: Vec<Response> = generated
            .iter()
            .map(|tokens| {
                let content = without_eos(tokens, eos);
                Ok(Response {
                    text: decode(&self.tokenizer, content)?,
                    tokens: content.len(),
                })
            })
            .collect::<Result<_, TrainError>>()?;
        items.insert(
            "answer/length".into(),
            answers.iter().map(|a| a.tokens as f64).collect(),
        );
        for (user, pairs) in &self.pairs {
            for pair in pairs {
                let answer = &answers[pair.prompt];
                let tokens = Tokens {
                    generated: answer.tokens,
                    chosen: pair.chosen.tokens,
                    rejected: pair.rejected.tokens,
                };
                if let Some(score) = style_score(
                    pair.axis,
                    &answer.text,
                    &pair.chosen.text,
                    &pair.rejected.text,
                    tokens,
                ) {
                    items
                        .entry(format!("answer/{user}/style"))
                        .or_default()
                        .push(score);
                }
                if let Some(right) =
                    fact_right(&answer.text, &pair.chosen.text, &pair.rejected.text)
                {
                    items
                        .entry(format!("answer/{user}/fact"))
                        .or_default()
                        .push(if right { 1.0 } else { 0.0 });
                }
            }
        }
        Ok(())
    }
}

/// `tokens` without a final end-of-sequence token.
fn without_eos(tokens: &[u32], eos: u32) -> &[u32] {
    tokens.strip_suffix(&[eos]).unwrap_or(tokens)
}

fn decode(tokenizer: &Tokenizer, tokens: &[u32]) -> Result<String, TrainError> {
    tokenizer
        .decode(tokens, true)
        .map_err(|e| TrainError::EvalText {
            set: "generated answers".into(),
            source: ModelError::Tokenize(e.to_string()),
        })
}
