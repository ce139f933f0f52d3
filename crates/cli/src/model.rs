//! `bapo model init`: a model of a real checkpoint's shape, with its tokenizer, and made-up
//! weights. The GPU check kit (`cargo xtask gpu-kit`) ships SmolLM2-135M's shape this way: its
//! 540 MB of f32 weights would not travel, and speed does not depend on their values.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bapo_model::{HfArchitecture, LlamaConfig};
use bapo_model::{Llama, export_hf};
use burn::tensor::Device;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a checkpoint folder shaped like `--like`, with random weights and its tokenizer.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// A Hugging Face folder (Llama or Qwen2) whose `config.json` gives the shape and whose
    /// tokenizer files are copied; its weights are not needed.
    #[arg(long)]
    like: PathBuf,
    /// The folder to write (must not hold a checkpoint already).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the weights: the same seed gives the same model.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The tokenizer files transformers reads, copied where present.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> Result<()> {
    let config_path = args.like.join("config.json");
    let (architecture, config) = LlamaConfig::from_hf(&config_path)?;
    if !args.like.join("tokenizer.json").exists() {
        bail!(
            "{}: no tokenizer.json; `--like` needs a folder with the model's tokenizer",
            args.like.display()
        );
    }
    let model = Llama::random(
        &config,
        architecture == HfArchitecture::Qwen2,
        initializer_range(&config_path)?,
        args.seed,
        &Device::flex(),
    );
    // Refuses a folder that holds a checkpoint already, before any tokenizer file is copied.
    export_hf(&model, &config, &args.out)?;
    for name in TOKENIZER_FILES {
        let from = args.like.join(name);
        if from.exists() {
            let to = args.out.join(name);
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    println!(
        "wrote {} ({} layers, hidden size {}, random weights of seed {})",
        args.out.display(),
        config.num_layers,
        config.hidden_size,
        args.seed
    );
    Ok(())
}

/// `initializer_range` of a config.json: the standard deviation transformers draws weights
/// with (0.02, its default, when the file does not say).
fn initializer_range(path: &Path) -> Result<f32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match json.get("initializer_range") {
        None => Ok(0.02),
        Some(value) => match value.as_f64() {
            Some(std) if std > 0.0 && std.is_finite() => Ok(std as f32),
            _ => bail!(
                "{}: `initializer_range` is {value}, not a positive number",
                path.display()
            ),
        },
    }
}
