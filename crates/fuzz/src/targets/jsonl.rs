//! `jsonl`: a preference data file (`data.path`) in each of the forms TRL accepts (text,
//! conversational, implicit prompt, with and without a supplied base response), read,
//! restricted to a user, tokenised with the fixture's tokenizer and chat template, truncated
//! and split by entity, as `prepare` does. Every kept example must fit `max_length` and the
//! vocabulary.

use bapo_data::{Tokenization, TruncationSettings, load_jsonl, split_by_entity, tokenize_dataset};
use bapo_model::HfTokenizer;

use super::{read, write};
use crate::{Harness, Input, Scratch, fixture_dir};

const FILE: &str = "preferences.jsonl";

/// The standard form (text prompt and completions), one row with a supplied base response.
const TEXT_FORM: &str = r#"{"prompt": "what colour is the sky ?", "chosen": " it is blue .", "rejected": " it is green .", "user": "a", "entity": "sky"}
{"prompt": "what colour is the sun ?", "chosen": " it is yellow .", "rejected": " it is blue .", "base": " it is red .", "user": "b", "entity": "sun"}
"#;

/// TRL's implicit prompt: whole conversations whose shared start is the prompt.
const IMPLICIT_PROMPT: &str = r#"{"chosen": [{"role": "user", "content": "what colour is snow ?"}, {"role": "assistant", "content": "it is white ."}], "rejected": [{"role": "user", "content": "what colour is snow ?"}, {"role": "assistant", "content": "it is black ."}], "user": "a"}
"#;

const LIMITS: TruncationSettings = TruncationSettings {
    max_length: 24,
    max_prompt_length: Some(16),
};

pub struct JsonlTarget {
    seeds: Vec<Input>,
    tokenizer: HfTokenizer,
    vocab_rows: usize,
    scratch: Scratch,
}

impl JsonlTarget {
    pub fn new() -> Result<Self, String> {
        let fixture = fixture_dir();
        let vocab_rows = 39;
        Ok(JsonlTarget {
            seeds: vec![
                Input::new(FILE, read(&fixture, FILE)?),
                Input::new(FILE, TEXT_FORM.as_bytes().to_vec()),
                Input::new(FILE, IMPLICIT_PROMPT.as_bytes().to_vec()),
            ],
            tokenizer: HfTokenizer::read(&fixture, vocab_rows).map_err(|e| e.to_string())?,
            vocab_rows,
            scratch: Scratch::new("jsonl"),
        })
    }
}

impl Harness for JsonlTarget {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn seeds(&self) -> Vec<Input> {
        self.seeds.clone()
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        write(self.scratch.path(), FILE, &input.bytes)?;
        let mut dataset = load_jsonl(&self.scratch.path().join(FILE)).map_err(|e| e.to_string())?;
        if let Some(user) = dataset.users().first() {
            dataset = dataset.for_user(user).map_err(|e| e.to_string())?;
        }
        let tokenization = Tokenization {
            tokenizer: &self.tokenizer.tokenizer,
            chat_template: self.tokenizer.chat_template.as_ref(),
            eos_token: self.tokenizer.eos_token,
        };
        let (examples, _dropped) =
            tokenize_dataset(&dataset, &tokenization, &LIMITS).map_err(|e| e.to_string())?;
        for e in &examples {
            let longest = e.chosen.len().max(e.rejected.len());
            assert!(
                e.prompt.len() + longest <= LIMITS.max_length,
                "line {}: {} + {longest} tokens kept, max_length {}",
                e.line,
                e.prompt.len(),
                LIMITS.max_length
            );
            let parts = [&e.prompt, &e.chosen, &e.rejected];
            for id in parts.into_iter().flatten().chain(e.base.iter().flatten()) {
                assert!(
                    (*id as usize) < self.vocab_rows,
                    "line {}: token id {id}",
                    e.line
                );
            }
        }
        let (train, test) = split_by_entity(&examples, 0.25, 0);
        assert_eq!(
            train.len() + test.len(),
            examples.len(),
            "the split lost examples"
        );
        Ok(())
    }

    fn input_size(&self, input: &Input) -> usize {
        input.bytes.len()
    }
}
