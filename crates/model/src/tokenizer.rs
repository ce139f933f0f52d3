//! Tokenizers built in memory from GGUF metadata (`tokenizer.ggml.*`), with the `tokenizers`
//! crate (pure-Rust regex backend).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with pre-tokenizer `smollm`
//! (digits split one by one, then byte-level without a prefix space) or the plain GPT-2 one.
//! Control tokens (`token_type` 3) become special tokens, matched whole before BPE.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::ModelError;
use crate::gguf::{GgufFile, MetaValue};

/// `token_type` of control tokens in llama.cpp's vocabulary.
const CONTROL: u64 = 3;

/// Builds the tokenizer stored in a GGUF file's metadata.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer, ModelError> {
    let invalid = |message: String| ModelError::Tokenizer {
        path: file.path.clone(),
        message,
    };
    let model = file.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(invalid(format!(
            "tokenizer model `{model}` is not supported (gpt2 byte-level BPE is)"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        let array = file
            .get(key)?
            .as_array()
            .ok_or_else(|| invalid(format!("`{key}` is not an array")))?;
        array
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("`{key}` holds a non-string")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    invalid(format!(
                        "merge `{m}` is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let types: Vec<u64> = match file.metadata.get("tokenizer.ggml.token_type") {
        Some(MetaValue::Array(values)) => values.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), id as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| invalid(format!("building the BPE model: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let byte_level = ByteLevel::new(false, true, true);
    let pre = match file.get_str("tokenizer.ggml.pre").unwrap_or("default") {
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        "default" | "gpt-2" | "gpt2" => PreTokenizerWrapper::ByteLevel(byte_level),
        other => {
            return Err(invalid(format!(
                "pre-tokenizer `{other}` is not supported (smollm, gpt-2 are)"
            )));
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| **t == CONTROL)
        .map(|(token, _)| AddedToken::from(token.clone(), true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}
