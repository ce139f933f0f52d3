//! `bapo train`, `bapo anchors` and `bapo eval`: the run config, then the library's loop.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bapo_train::{Progress, RunConfig, TrainOptions};
use clap::Args;

/// The config file and its overrides, shared by the three commands.
#[derive(Args)]
pub struct ConfigArgs {
    /// Run config (TOML); see docs/training.md for every key.
    #[arg(long)]
    config: PathBuf,
    /// Train this objective (see `bapo objectives`) instead of the config's, from its default
    /// settings; `--set objective.KEY=…` changes them. The config's own settings are kept when
    /// it names the same objective.
    #[arg(long, value_name = "NAME")]
    objective: Option<String>,
    /// Override a config key, e.g. `--set training.max_steps=10 --set objective.beta=0.2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<RunConfig> {
        let mut overrides = Vec::new();
        if let Some(name) = &self.objective {
            let text = std::fs::read_to_string(&self.config)
                .with_context(|| format!("reading {}", self.config.display()))?;
            // Only the objective's name is needed here; a syntax error is reported in full by
            // the config reader below.
            let named = text.parse::<toml::Table>().ok().and_then(|t| {
                t.get("objective")?
                    .get("name")?
                    .as_str()
                    .map(str::to_string)
            });
            if named.as_deref() != Some(name.as_str()) {
                // First, so that `--set objective.KEY=…` applies to the new objective.
                overrides.push(format!("objective={{name={name:?}}}"));
            }
        }
        overrides.extend(self.overrides.iter().cloned());
        Ok(RunConfig::load(&self.config, &overrides)?)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Continue the run in `output.dir` from its newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Recompute the anchors (and the stored evaluation before training) even if cached.
    #[arg(long)]
    force_anchors: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

pub fn train(args: TrainArgs) -> Result<()> {
    let config = args.config.load()?;
    let summary = bapo_train::train(
        &config,
        &TrainOptions {
            resume: args.resume,
            force_anchors: args.force_anchors,
            quiet: args.quiet,
        },
    )
    .with_context(|| format!("training with {}", args.config.config.display()))?;
    println!(
        "{} steps; run directory {}\n\n{}",
        summary.steps,
        summary.run_dir.display(),
        summary.table
    );
    Ok(())
}

#[derive(Args)]
pub struct AnchorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Recompute even if the cache holds these anchors.
    #[arg(long)]
    force: bool,
}

pub fn anchors(args: AnchorArgs) -> Result<()> {
    let config = args.config.load()?;
    let prepared = bapo_train::prepare(&config, args.force, &Progress { quiet: false })
        .with_context(|| format!("anchors for {}", args.config.config.display()))?;
    for line in &prepared.summary {
        println!("{line}");
    }
    let base: usize = prepared.train.iter().map(|e| e.base.len()).sum();
    println!(
        "{} training examples with {} base responses and reference log-probs from {} reference(s); cache {}",
        prepared.train.len(),
        base,
        prepared.train.first().map_or(0, |e| e.reference_count()),
        config.anchors.cache_dir.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// A checkpoint folder (default: the newest under the run's `output.dir`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Also write the evaluation into the run's logs at the checkpoint's step (eval.jsonl,
    /// eval_items.jsonl, TensorBoard), replacing one of the same step.
    #[arg(long)]
    write: bool,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let config = args.config.load()?;
    let report = bapo_train::evaluate_run(&config, args.checkpoint.as_deref(), false, args.write)
        .with_context(|| format!("evaluating with {}", args.config.config.display()))?;
    println!("{report}");
    Ok(())
}
