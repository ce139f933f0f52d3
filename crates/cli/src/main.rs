//! `bapo`: preference optimisation that personalises a language model without making it forget.

use anyhow::Result;
use clap::{Parser, Subcommand};

// The built-in objectives register themselves when linked; `use … as _` makes sure they are.
use bapo_objective_bapo as _;
use bapo_objective_dpo as _;
use bapo_objective_kl_dpo as _;
use bapo_objective_mrpo as _;

mod objectives;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Objectives { json } => objectives::list(json),
    }
}
