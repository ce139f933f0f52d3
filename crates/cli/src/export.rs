//! `bapo export`: a model file (GGUF or checkpoint folder) as a transformers checkpoint with
//! its tokenizer — e.g. SmolLM2's GGUF for the PyTorch side of `cargo xtask bench` — or, with
//! `--run`, any checkpoint of a run as the run's end phase exports it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bapo_model::{LoadedModel, export_tokenizer};
use bapo_train::RunConfig;
use clap::Args;

#[derive(Args)]
pub struct ExportArgs {
    /// A GGUF file or a Hugging Face checkpoint folder (Llama, Qwen2 or GPT-2).
    #[arg(long, required_unless_present = "run", conflicts_with = "run")]
    model: Option<PathBuf>,
    /// A run directory: export its newest checkpoint (or `--checkpoint`) as the run's end
    /// does, a PEFT adapter (LoRA) or a transformers checkpoint, from its config.toml.
    #[arg(long)]
    run: Option<PathBuf>,
    /// With `--run`: a checkpoint folder of that run (default: the newest).
    #[arg(long, requires = "run")]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    device: crate::device_args::DeviceArgs,
    /// The folder to write (must not exist already).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    if let Some(run) = &args.run {
        return export_run(&args, run);
    }
    let model = args.model.as_ref().context("--model or --run is needed")?;
    let device = args.device.device()?;
    let loaded = LoadedModel::open(model, &device)
        .with_context(|| format!("loading {}", model.display()))?;
    loaded.model.export_hf(&loaded.config, &args.out)?;
    export_tokenizer(&loaded, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

/// `--run DIR`: the run's own config (its config.toml), found where the run now is, on this
/// command's backend.
fn export_run(args: &ExportArgs, run: &Path) -> Result<()> {
    let mut overrides = vec![format!("output.dir={:?}", run.display().to_string())];
    overrides.extend(args.device.overrides());
    let config = RunConfig::load(&run.join(bapo_rundir::files::CONFIG_FILE), &overrides)?;
    let written = bapo_train::export_run(&config, args.checkpoint.as_deref(), &args.out)
        .with_context(|| format!("exporting a checkpoint of {}", run.display()))?;
    println!("wrote {written}");
    Ok(())
}
