//! `tokenizer`: the tokenizer side of a checkpoint folder: `tokenizer.json`,
//! `tokenizer_config.json` (special tokens, chat template) and `chat_template.jinja`, read as
//! a model's are, then used as data preparation uses them: a conversation rendered,
//! tokenised and decoded. Every token id must fit the model's embedding.

use bapo_model::gguf::GgufFile;
use bapo_model::tokenizer::tokenizer_from_gguf;
use bapo_model::{ChatMessage, HfTokenizer};

use super::{FileSet, read};
use crate::gguf_seed::tiny_gguf;
use crate::{Harness, Input, Scratch, fixture_dir};

const TOKENIZER: &str = "tokenizer.json";
const SETTINGS: &str = "tokenizer_config.json";
const TEMPLATE: &str = "chat_template.jinja";
const FILES: [&str; 3] = [TOKENIZER, SETTINGS, TEMPLATE];

pub struct TokenizerTarget {
    /// The folder as transformers 5 saves it (template in its own file): the files an input
    /// does not replace.
    base: FileSet,
    /// Further seeds: the template inside tokenizer_config.json, and a byte-level BPE
    /// tokenizer (the SmolLM2 kind) made from the GGUF seed's vocabulary.
    extra_seeds: Vec<Input>,
    vocab_rows: usize,
    dir: Scratch,
}

impl TokenizerTarget {
    pub fn new() -> Result<Self, String> {
        let tf5 = fixture_dir().with_file_name("tiny-chat-tf5");
        let base = FileSet::read(&tf5, &FILES)?;
        let gguf = GgufFile::parse(
            std::path::Path::new("seed.gguf"),
            tiny_gguf(&fixture_dir())?,
        )
        .map_err(|e| e.to_string())?;
        let bpe = tokenizer_from_gguf(&gguf)
            .map_err(|e| e.to_string())?
            .to_string(false)
            .map_err(|e| e.to_string())?;
        let extra_seeds = vec![
            Input::new(SETTINGS, read(&fixture_dir(), SETTINGS)?),
            Input::new(TOKENIZER, bpe.into_bytes()),
        ];
        Ok(TokenizerTarget {
            base,
            extra_seeds,
            vocab_rows: 39,
            dir: Scratch::new("tokenizer"),
        })
    }
}

impl Harness for TokenizerTarget {
    fn name(&self) -> &'static str {
        "tokenizer"
    }

    fn seeds(&self) -> Vec<Input> {
        let mut seeds = self.base.seeds(&FILES);
        seeds.extend(self.extra_seeds.iter().cloned());
        seeds
    }

    fn run(&mut self, input: &Input) -> Result<(), String> {
        self.base.write(self.dir.path(), input)?;
        let files =
            HfTokenizer::read(self.dir.path(), self.vocab_rows).map_err(|e| e.to_string())?;
        let conversation = [
            ChatMessage::new("system", "the colour of things ."),
            ChatMessage::new("user", "what colour is the sky ?"),
            ChatMessage::new("assistant", "it is blue ."),
        ];
        let text = match &files.chat_template {
            Some(template) => template
                .render(&conversation, false)
                .map_err(|e| e.to_string())?,
            None => "what colour is the sky ? it is blue .".to_string(),
        };
        let encoding = files
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| e.to_string())?;
        let ids = encoding.get_ids();
        for &id in ids.iter().chain([&files.eos_token, &files.pad_token]) {
            assert!(
                (id as usize) < self.vocab_rows,
                "token id {id} accepted for a model of {} rows",
                self.vocab_rows
            );
        }
        files
            .tokenizer
            .decode(ids, false)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn input_size(&self, input: &Input) -> usize {
        self.base.size(input)
    }
}
