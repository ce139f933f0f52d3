//! # bapo-cli: the `bapo` command line, as a library
//!
//! `bapo`: preference optimisation that personalises a language model without making it forget.
//! The binary is [`main`] and nothing else, so a crate that adds an objective makes its own
//! `bapo` in three lines (examples/ipo/src/bin/bapo-ipo.rs, docs/adding-an-objective.md):
//!
//! ```ignore
//! use my_objective as _; // links its registration
//! fn main() -> std::process::ExitCode {
//!     bapo_cli::main()
//! }
//! ```

use anyhow::Result;
use clap::{Parser, Subcommand};

// The built-in objectives register themselves when linked; `use … as _` makes sure they are.
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;

mod bench;
mod device_args;
mod export;
mod generate;
mod model;
mod objectives;
mod probe;
mod score;
mod train;

#[derive(Parser)]
#[command(
    name = "bapo",
    version,
    about = "Base-anchored preference optimisation of language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered objectives with their default `[objective]` settings.
    Objectives {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Log-probs of a completion after a prompt (per token and summed) and the top next tokens.
    Score(score::ScoreArgs),
    /// Continue a prompt with a model (greedy by default), streaming the text.
    Generate(generate::GenerateArgs),
    /// A model's accuracy on every item of the knowledge and alignment probes (BIG-bench,
    /// the country probe), next to chance and a length-only rule, with 95% intervals.
    Probe(probe::ProbeArgs),
    /// Train a run config: anchors if missing, the loop, evaluations, checkpoints, export.
    Train(train::TrainArgs),
    /// Generate (or reuse) the anchors of a run config: base responses and reference log-probs.
    Anchors(train::AnchorArgs),
    /// Evaluate a checkpoint of a run against the model before training.
    Eval(train::EvalArgs),
    /// Write a model as a transformers checkpoint with its tokenizer.
    Export(export::ExportArgs),
    /// Make a model: `init` writes one of a checkpoint's shape with random weights.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Time one phase: a training step, generation, evaluation or the anchor pass (`cargo
    /// xtask bench` runs them all).
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the command, with every objective linked into the
/// calling binary available. Errors are printed as their chain of messages.
pub fn main() -> std::process::ExitCode {
    // The error chain, without a backtrace: messages name the file, key or value at fault.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_message(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a message holds its own words only and names
/// its cause as its source, never in its text as well (issue #25).
fn error_message(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Objectives { json } => objectives::list(json),
        Command::Score(args) => score::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Train(args) => train::train(args),
        Command::Anchors(args) => train::anchors(args),
        Command::Eval(args) => train::eval(args),
        Command::Export(args) => export::run(args),
        Command::Model(command) => model::run(command),
        Command::Bench(args) => bench::run(args),
    }
}
