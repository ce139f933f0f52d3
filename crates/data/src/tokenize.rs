//! Tokenisation of preference examples with the model's tokenizer and chat template, and
//! TRL's truncation.
//!
//! - Standard rows: prompt and completions are tokenised separately.
//! - Conversational rows: the prompt is the chat template applied to the prompt messages with
//!   the generation prompt; a completion is the template applied to prompt + completion, minus
//!   that prompt text (as TRL does).
//! - No special tokens are added by the tokenizer, so a BOS the template writes is the only
//!   one; EOS ends every completion (appended unless the completion already ends with it;
//!   whitespace a template writes after its final end-of-turn token is dropped).
//! - Truncation: the prompt keeps its **end** (`max_prompt_length`), completions keep their
//!   **start** (`max_length` − prompt length). A prompt that alone reaches `max_length` leaves
//!   no room and drops the row (counted).

use bapo_model::{ChatMessage, ChatTemplate};
use tokenizers::Tokenizer;

use crate::error::DataError;
use crate::format::{Completion, Dataset, DropReason, DroppedRow, Message, Prompt};

/// Length limits, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncationSettings {
    /// Prompt + completion.
    pub max_length: usize,
    /// The prompt alone (its start is cut); `None`: only `max_length` applies.
    pub max_prompt_length: Option<usize>,
}

/// What tokenisation needs from the model.
#[derive(Debug, Clone, Copy)]
pub struct Tokenization<'a> {
    pub tokenizer: &'a Tokenizer,
    pub chat_template: Option<&'a ChatTemplate>,
    pub eos_token: u32,
}

/// One tokenised example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
    pub base: Option<Vec<u32>>,
    pub user: Option<String>,
    pub entity: Option<String>,
    pub line: usize,
}

/// Tokenises and truncates every example; rows whose prompt leaves no room are dropped and
/// returned with the dataset's earlier drops.
pub fn tokenize_dataset(
    dataset: &Dataset,
    tokenization: &Tokenization<'_>,
    limits: &TruncationSettings,
) -> Result<(Vec<TokenizedExample>, Vec<DroppedRow>), DataError> {
    let mut examples = Vec::new();
    let mut dropped = dataset.dropped.clone();
    for example in &dataset.examples {
        let error = |message: String| DataError::Invalid {
            path: dataset.path.clone(),
            line: example.line,
            message,
        };
        let encoder = Encoder {
            tokenization,
            error: &error,
        };
        let (prompt_text, prompt_messages) = match &example.prompt {
            Prompt::Text(text) => (text.clone(), None),
            Prompt::Messages(messages) => (encoder.render(messages, true)?, Some(messages)),
        };
        let mut prompt = encoder.encode(&prompt_text)?;
        // Nothing to answer: generation would fail later without naming the row (issue #26).
        if prompt.is_empty() {
            return Err(error(match &example.prompt {
                Prompt::Text(_) => "the prompt is empty".into(),
                Prompt::Messages(_) => format!(
                    "the prompt is empty once the model's chat template renders it ({prompt_text:?})"
                ),
            }));
        }
        let completion = |c: &Completion| encoder.completion(c, &prompt_text, prompt_messages);

        if let Some(max) = limits.max_prompt_length
            && prompt.len() > max
        {
            prompt.drain(..prompt.len() - max);
        }
        if prompt.len() >= limits.max_length {
            dropped.push(DroppedRow {
                line: example.line,
                reason: DropReason::PromptOverBudget,
                user: example.user.clone(),
            });
            continue;
        }
        let room = limits.max_length - prompt.len();
        let cut = |mut ids: Vec<u32>| {
            ids.truncate(room);
            ids
        };
        examples.push(TokenizedExample {
            chosen: cut(completion(&example.chosen)?),
            rejected: cut(completion(&example.rejected)?),
            base: example.base.as_ref().map(completion).transpose()?.map(cut),
            prompt,
            user: example.user.clone(),
            entity: example.entity.clone(),
            line: example.line,
        });
    }
    dropped.sort_by_key(|d| d.line);
    Ok((examples, dropped))
}

struct Encoder<'a, E> {
    tokenization: &'a Tokenization<'a>,
    error: &'a E,
}

impl<E: Fn(String) -> DataError> Encoder<'_, E> {
    fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.tokenization
            .tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| (self.error)(format!("tokenizing: {e}")))
    }

    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, DataError> {
        let template = self.tokenization.chat_template.ok_or_else(|| {
            (self.error)("conversational data needs a chat template, and the model has none".into())
        })?;
        let messages: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage::new(&m.role, &m.content))
            .collect();
        // The template may refuse the row (roles that do not alternate) or be broken itself:
        // the message says which file it came from as well as the row (issue #26).
        template
            .render(&messages, add_generation_prompt)
            .map_err(|e| (self.error)(format!("the model's chat template failed on this row: {e}")))
    }

    /// A completion's tokens, ending with EOS.
    fn completion(
        &self,
        completion: &Completion,
        prompt_text: &str,
        prompt: Option<&Vec<Message>>,
    ) -> Result<Vec<u32>, DataError> {
        let text = match (completion, prompt) {
            (Completion::Text(text), _) => text.clone(),
            (Completion::Messages(answer), Some(prompt)) => {
                let whole: Vec<Message> = prompt.iter().chain(answer).cloned().collect();
                let rendered = self.render(&whole, false)?;
                rendered
                    .strip_prefix(prompt_text)
                    .ok_or_else(|| {
                        (self.error)("the chat template renders the conversation with a different prefix than the prompt alone".into())
                    })?
                    .to_string()
            }
            (Completion::Messages(_), None) => {
                return Err((self.error)(
                    "a message-list completion needs a message-list prompt".into(),
                ));
            }
        };
        let mut ids = self.encode(&text)?;
        let eos = self.tokenization.eos_token;
        // Drop whitespace the template writes after its last end-of-turn token.
        if let Some(last_eos) = ids.iter().rposition(|&t| t == eos) {
            let tail = self
                .tokenization
                .tokenizer
                .decode(&ids[last_eos + 1..], false)
                .unwrap_or_default();
            if tail.trim().is_empty() {
                ids.truncate(last_eos + 1);
            }
        }
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
        Ok(ids)
    }
}
