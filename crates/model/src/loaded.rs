//! Everything that comes with a model file: weights, tokenizer, chat template and special
//! token ids, loaded together.

use std::path::Path;

use burn::tensor::Device;
use tokenizers::Tokenizer;

use crate::ModelError;
use crate::chat::ChatTemplate;
use crate::gguf::GgufFile;
use crate::llama::{Llama, LlamaConfig};
use crate::tokenizer::tokenizer_from_gguf;

/// A model ready to score and generate.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: Llama,
    pub config: LlamaConfig,
    pub tokenizer: Tokenizer,
    /// `None` when the file ships no chat template.
    pub chat_template: Option<ChatTemplate>,
    pub eos_token: u32,
    pub pad_token: u32,
}

impl LoadedModel {
    /// Loads a GGUF file (weights dequantised to f32) onto `device`.
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let (model, config) = Llama::from_gguf(&file, device)?;
        let tokenizer = tokenizer_from_gguf(&file)?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab != config.vocab_size {
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "the tokenizer has {vocab} tokens but the model's embedding has {} rows",
                    config.vocab_size
                ),
            });
        }
        let chat_template = file
            .metadata
            .contains_key("tokenizer.chat_template")
            .then(|| ChatTemplate::from_gguf(&file))
            .transpose()?;
        let eos_token = file.get_u64("tokenizer.ggml.eos_token_id")? as u32;
        let pad_token = file
            .get_u64("tokenizer.ggml.padding_token_id")
            .map_or(eos_token, |id| id as u32);
        Ok(LoadedModel {
            model,
            config,
            tokenizer,
            chat_template,
            eos_token,
            pad_token,
        })
    }

    /// Token ids of a text (special tokens written in it are recognised; no BOS is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenize(e.to_string()))
    }

    /// The text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenize(e.to_string()))
    }
}
