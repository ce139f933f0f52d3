//! `bapo generate`: a model's continuation of a prompt, streamed as it is produced.

use std::io::Write;

use anyhow::{Context, Result};
use bapo_model::{ChatMessage, GenerationConfig, Sampling, generate};

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: crate::device_args::ModelArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user turn in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Upper bound on new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// `--temperature`, `--top-k`, `--top-p`, `--seed`: greedy by default.
    #[command(flatten)]
    sampling: Sampling,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let (loaded, device) = args.model.open()?;
    let text = if args.chat {
        let template = loaded.chat_template.as_ref().with_context(|| {
            format!(
                "{} has no chat template; drop --chat",
                args.model.model.display()
            )
        })?;
        template.render(&[ChatMessage::new("user", &args.prompt)], true)?
    } else {
        args.prompt.clone()
    };
    let prompt = loaded.encode(&text)?;
    anyhow::ensure!(!prompt.is_empty(), "--prompt is empty");
    loaded.check_length(
        prompt.len().saturating_add(args.max_new_tokens),
        "the prompt + --max-new-tokens",
    )?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling,
        stop_tokens: vec![loaded.eos_token],
        pad_token: loaded.pad_token,
        max_batch: 1,
    };

    // Print the text as it grows; a token that ends inside a multi-byte character decodes to
    // U+FFFD until the rest arrives, so wait for it.
    let mut tokens = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout();
    generate(&loaded.model, &[prompt], &config, &device, |_, token| {
        if token == loaded.eos_token {
            return;
        }
        tokens.push(token);
        if let Ok(text) = loaded.decode(&tokens)
            && !text.ends_with('\u{FFFD}')
            && let Some(new) = text.get(printed..)
            && !new.is_empty()
        {
            let _ = write!(stdout, "{new}");
            let _ = stdout.flush();
            printed = text.len();
        }
    })?;
    println!();
    Ok(())
}
