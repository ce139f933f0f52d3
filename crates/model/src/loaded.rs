//! Everything that comes with a model file: weights, tokenizer, chat template and special
//! token ids, loaded together.

use std::path::Path;

use burn::tensor::Device;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::ModelError;
use crate::causal_lm::{CausalLm, ModelConfig};
use crate::chat::ChatTemplate;
use crate::gguf::GgufFile;
use crate::hf::CHAT_TEMPLATE_FILE;
use crate::llama::Llama;
use crate::quantized::BaseQuantization;
use crate::tokenizer::tokenizer_from_gguf;

/// A model ready to score and generate.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: CausalLm,
    /// Its shape, as its file gives it (export writes it back).
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    /// `None` when the file ships no chat template.
    pub chat_template: Option<ChatTemplate>,
    pub eos_token: u32,
    pub pad_token: u32,
}

impl LoadedModel {
    /// Loads a model from a GGUF file or a Hugging Face checkpoint folder.
    /// `path` may also be a Hugging Face model id ([`crate::hub`]).
    pub fn open(path: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::open_quantized(path, device, BaseQuantization::None)
    }

    /// [`open`](Self::open) with the decoder blocks' projections held as `quantization` says
    /// (see [`crate::quantized`]): a GGUF file's and a Llama or Qwen2 checkpoint folder's as
    /// each is read, a GPT-2 folder's once loaded.
    pub fn open_quantized(
        path: &Path,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<Self, ModelError> {
        let path = &crate::hub::resolve(path)?;
        if path.is_dir() {
            return Self::from_hf_dir_quantized(path, device, quantization);
        }
        // A checkpoint's own files name their folder, which is what loads.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors")
            || name.ends_with(".safetensors.index.json")
            || name == "config.json"
        {
            let folder = path.parent().unwrap_or(Path::new("."));
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                message: format!(
                    "a file of a Hugging Face checkpoint; pass its folder instead: {}",
                    folder.display()
                ),
            });
        }
        Self::from_gguf_quantized(path, device, quantization)
    }

    /// Loads a Hugging Face checkpoint folder: `config.json`, safetensors weights,
    /// `tokenizer.json`, and (optional) `tokenizer_config.json` for the chat template and the
    /// special tokens.
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::from_hf_dir_quantized(dir, device, BaseQuantization::None)
    }

    /// [`from_hf_dir`](Self::from_hf_dir) with the decoder blocks' projections held as
    /// `quantization` says ([`CausalLm::from_hf_dir_quantized`]).
    fn from_hf_dir_quantized(
        dir: &Path,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<Self, ModelError> {
        let (model, config) = CausalLm::from_hf_dir_quantized(dir, device, quantization)?;
        let files = HfTokenizer::read(dir, config.vocab_size())?;
        Ok(LoadedModel {
            model,
            config,
            tokenizer: files.tokenizer,
            chat_template: files.chat_template,
            eos_token: files.eos_token,
            pad_token: files.pad_token,
        })
    }

    /// Loads a GGUF file (weights dequantised to f32) onto `device`.
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self, ModelError> {
        Self::from_gguf_quantized(path, device, BaseQuantization::None)
    }

    /// Loads a GGUF file with its decoder blocks' projections held as `quantization` says
    /// from the moment each is read (see [`crate::quantized`]).
    pub fn from_gguf_quantized(
        path: &Path,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let (model, config) = Llama::from_gguf_quantized(&file, device, quantization)?;
        let tokenizer = tokenizer_from_gguf(&file)?;
        check_vocabulary(&tokenizer, config.vocab_size, path)?;
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
            model: CausalLm::Llama(model),
            config: ModelConfig::Llama(config),
            tokenizer,
            chat_template,
            eos_token,
            pad_token,
        })
    }

    /// Rows of the model's token embedding.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size()
    }

    /// Refuses a sequence of `tokens` tokens (what `what` names, for the message) when it
    /// would run past the model's positions: Llama-family models were never trained there, and
    /// GPT-2 has no position embedding for them.
    pub fn check_length(&self, tokens: usize, what: &str) -> Result<(), ModelError> {
        match self.config.max_positions() {
            Some(max) if tokens > max => Err(ModelError::TooLong {
                what: what.to_string(),
                tokens,
                max,
            }),
            _ => Ok(()),
        }
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

/// Reads `tokenizer.json`. Its JSON syntax is checked first: the tokenizers crate (0.22)
/// panics ("Helper") on a syntax error inside the `decoder` object instead of returning it.
fn read_tokenizer_json(path: &Path) -> Result<Tokenizer, ModelError> {
    let fail = |message: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| fail(e.to_string()))?;
    text.parse::<Tokenizer>().map_err(|e| fail(e.to_string()))
}

/// A tokenizer may have fewer tokens than the embedding has rows (checkpoints often pad the
/// embedding), never more: those ids would index past the embedding. No two of its
/// vocabulary's tokens may share an id: decoding would give one of them for both (issue #26:
/// it was read without a word).
fn check_vocabulary(tokenizer: &Tokenizer, rows: usize, path: &Path) -> Result<(), ModelError> {
    let mut by_id: std::collections::BTreeMap<u32, String> = Default::default();
    for (token, id) in tokenizer.get_vocab(false) {
        if let Some(other) = by_id.insert(id, token.clone()) {
            let (first, second) = if other < token {
                (other, token)
            } else {
                (token, other)
            };
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "the tokens {first:?} and {second:?} both have id {id} in the vocabulary"
                ),
            });
        }
    }
    // The largest id, not the count: a vocabulary may skip ids, and every id it can produce
    // indexes the embedding.
    let largest = tokenizer.get_vocab(true).into_values().max();
    if let Some(id) = largest
        && id as usize >= rows
    {
        return Err(ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: format!(
                "the tokenizer has token id {id} but the model's embedding has only {rows} rows: \
                 they do not belong together"
            ),
        });
    }
    Ok(())
}

/// The chat template of a checkpoint folder. Older transformers keep it in
/// tokenizer_config.json's `chat_template` (a string, or a list of named templates of which
/// "default" is used); transformers 5 writes it to `chat_template.jinja` beside that file.
fn chat_template_source(dir: &Path, settings: &Value) -> Result<Option<String>, ModelError> {
    match settings.get("chat_template") {
        Some(Value::String(source)) => return Ok(Some(source.clone())),
        Some(Value::Array(named)) => {
            return Ok(named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)));
        }
        _ => {}
    }
    let path = dir.join(CHAT_TEMPLATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|e| ModelError::Io {
            path,
            message: e.to_string(),
        })
}

/// The tokenizer side of a Hugging Face checkpoint folder: `tokenizer.json`, and the chat
/// template and special tokens of `tokenizer_config.json` (or `chat_template.jinja`).
pub struct HfTokenizer {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub eos_token: u32,
    pub pad_token: u32,
}

impl HfTokenizer {
    /// Reads the tokenizer files of `dir`, checked against a model of `vocab_rows` embedding
    /// rows.
    pub fn read(dir: &Path, vocab_rows: usize) -> Result<Self, ModelError> {
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.exists() {
            return Err(ModelError::Io {
                path: tokenizer_path,
                message: "missing: a Hugging Face checkpoint needs its tokenizer.json".into(),
            });
        }
        let tokenizer = read_tokenizer_json(&tokenizer_path)?;
        check_vocabulary(&tokenizer, vocab_rows, &tokenizer_path)?;

        let settings_path = dir.join("tokenizer_config.json");
        let settings: Value = if settings_path.exists() {
            let text = std::fs::read_to_string(&settings_path).map_err(|e| ModelError::Io {
                path: settings_path.clone(),
                message: e.to_string(),
            })?;
            serde_json::from_str(&text).map_err(|e| ModelError::Format {
                path: settings_path.clone(),
                message: e.to_string(),
            })?
        } else {
            Value::Null
        };
        // Special tokens are strings, or objects with a `content` string.
        let special = |key: &str| -> Option<String> {
            match settings.get(key)? {
                Value::String(s) => Some(s.clone()),
                other => other.get("content")?.as_str().map(str::to_string),
            }
        };
        let eos_text = special("eos_token").ok_or_else(|| ModelError::Format {
            path: settings_path.clone(),
            message: "no `eos_token`: cannot tell where a generated answer ends".into(),
        })?;
        let id_of = |text: &str| {
            tokenizer
                .token_to_id(text)
                .ok_or_else(|| ModelError::Tokenizer {
                    path: tokenizer_path.clone(),
                    message: format!("special token {text:?} is not in the vocabulary"),
                })
        };
        let eos_token = id_of(&eos_text)?;
        let pad_token = special("pad_token").map_or(Ok(eos_token), |t| id_of(&t))?;
        let chat_template = chat_template_source(dir, &settings)?.map(|source| ChatTemplate {
            source,
            bos_token: special("bos_token").unwrap_or_default(),
            eos_token: eos_text.clone(),
        });
        Ok(HfTokenizer {
            tokenizer,
            chat_template,
            eos_token,
            pad_token,
        })
    }
}
