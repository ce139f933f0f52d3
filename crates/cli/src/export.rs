//! `bapo export`: a model file (GGUF or checkpoint folder) as a transformers checkpoint with
//! its tokenizer — e.g. SmolLM2's GGUF for the PyTorch side of `cargo xtask bench`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bapo_model::{LoadedModel, export_tokenizer};
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// A GGUF file or a Hugging Face checkpoint folder (Llama, Qwen2 or GPT-2).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: crate::device_args::DeviceArgs,
    /// The folder to write (must not hold a checkpoint already).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = args.device.device()?;
    let loaded = LoadedModel::open(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    loaded.model.export_hf(&loaded.config, &args.out)?;
    export_tokenizer(&loaded, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
