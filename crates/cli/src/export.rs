//! `bapo export`: a model file (GGUF or checkpoint folder) as a transformers checkpoint with
//! its tokenizer — e.g. SmolLM2's GGUF for the PyTorch side of `cargo xtask bench`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bapo_model::{CausalLm, GgufFile, LlamaConfig, LoadedModel, export_hf, export_tokenizer};
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// A GGUF file or a Hugging Face checkpoint folder (Llama family).
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
    let CausalLm::Llama(model) = &loaded.model else {
        bail!(
            "{}: only Llama-family models are exported",
            args.model.display()
        );
    };
    let config = if args.model.is_dir() {
        bapo_model::hf::llama_config_from_hf(&args.model.join("config.json"))?.1
    } else {
        LlamaConfig::from_gguf(&GgufFile::open(&args.model)?)?
    };
    export_hf(model, &config, &args.out)?;
    export_tokenizer(&loaded, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
