//! Tokenizers built in memory from GGUF metadata (`tokenizer.ggml.*`), with the `tokenizers`
//! crate (pure-Rust regex backend).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with pre-tokenizer `smollm`
//! (digits split one by one, then byte-level without a prefix space), `qwen2` (Qwen2's split
//! regex, then byte-level) or the plain GPT-2 one, as transformers builds them from a GGUF
//! file (`gguf_file=`). Control tokens (`token_type` 3) become special tokens and
//! user-defined ones (4) plain added tokens, both matched whole before BPE.
//!
//! Like transformers' and llama.cpp's GGUF tokenizers, and unlike Qwen2's own
//! `tokenizer.json`, the `qwen2` one does not NFC-normalise the text first (a GGUF file carries
//! no normaliser): text with decomposed accents tokenises differently.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::ModelError;
use crate::gguf::{GgufFile, MetaValue};

/// `token_type` of control tokens in llama.cpp's vocabulary.
const CONTROL: u64 = 3;
/// `token_type` of user-defined tokens: added tokens that are not special (`<think>`).
const USER_DEFINED: u64 = 4;

/// Qwen2's pre-tokenizer split (transformers' `tokenization_qwen2.PRETOKENIZE_REGEX`): like
/// GPT-4's, but one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer llama.cpp names `name` (`tokenizer.ggml.pre`), as transformers builds
/// it for that model; the error says which names are supported.
fn pre_tokenizer(name: &str) -> Result<PreTokenizerWrapper, String> {
    let byte_level = ByteLevel::new(false, true, true);
    Ok(match name {
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ])),
        "qwen2" => {
            let split = Split::new(
                SplitPattern::Regex(QWEN2_SPLIT.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| format!("Qwen2's split pattern: {e}"))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ]))
        }
        "default" | "gpt-2" | "gpt2" => PreTokenizerWrapper::ByteLevel(byte_level),
        other => {
            return Err(format!(
                "pre-tokenizer `{other}` is not supported (smollm, qwen2, gpt-2 are)"
            ));
        }
    })
}

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

    let pre =
        pre_tokenizer(file.get_str("tokenizer.ggml.pre").unwrap_or("default")).map_err(invalid)?;
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let of_type = |wanted: u64, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == wanted)
            .map(|(token, _)| AddedToken::from(token.clone(), special).normalized(false))
            .collect()
    };
    tokenizer.add_special_tokens(&of_type(CONTROL, true));
    tokenizer.add_tokens(&of_type(USER_DEFINED, false));
    Ok(tokenizer)
}
