//! Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`, or
//! `tokenizer_config.json`'s `chat_template`) rendered with minijinja, as
//! `transformers.apply_chat_template` does.

use serde::Serialize;

use crate::ModelError;
use crate::gguf::GgufFile;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A model's chat template.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template stored in a GGUF file, with its BOS/EOS token texts.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let source = file.get_str("tokenizer.chat_template")?.to_string();
        let token = |key: &str| -> String {
            let tokens = file
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array());
            file.get_u64(key)
                .ok()
                .and_then(|id| tokens.and_then(|t| t.get(id as usize)))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(ChatTemplate {
            source,
            bos_token: token("tokenizer.ggml.bos_token_id"),
            eos_token: token("tokenizer.ggml.eos_token_id"),
        })
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the assistant's header so
    /// the model's continuation is its answer.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let mut env = minijinja::Environment::new();
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        let error = |e: minijinja::Error| ModelError::ChatTemplate(format!("{e:#}"));
        let template = env.template_from_str(&self.source).map_err(error)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(error)
    }
}
