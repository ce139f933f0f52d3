//! # bapo-train: the training loop
//!
//! One loop for every backend (the `Device` picks it, see [`backend`]): run config
//! ([`config`]), everything before the first step ([`prepare`]: model, data, anchors,
//! evaluation sets), the micro-batch step ([`step`]: one policy forward over
//! `[chosen; rejected; base]`, the objective's quantities, per-example losses), AdamW with
//! PyTorch's semantics and global-norm clipping ([`optimizer`]), the learning-rate schedule
//! ([`schedule`]), atomic checkpoints with exact resume ([`checkpoint`]), logs and plots
//! ([`metrics`], [`plots`]) and the forgetting/personalisation evaluation ([`eval`]).
//!
//! [`train`] is the library entry point: a binary that links further objective crates and
//! calls it trains them with nothing else changed.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod metrics;
pub mod optimizer;
pub mod optimizer_step;
pub mod params;
pub mod plots;
pub mod prepare;
pub mod progress;
pub mod run;
pub mod rundir;
pub mod schedule;
pub mod step;
pub mod tensorboard;

use std::path::{Path, PathBuf};

pub use backend::{Backend, BackendError};
pub use config::{ConfigError, RunConfig};
pub use prepare::{Prepared, prepare};
pub use progress::Progress;
pub use run::{RunSummary, TrainOptions, evaluate_run, export_run, train};

/// Anything that stops a run. Messages name the file, key, step or data lines at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    ConfigFile(#[from] ConfigError),
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] bapo_model::ModelError),
    #[error(transparent)]
    Lora(#[from] bapo_model::LoraError),
    #[error(transparent)]
    Data(#[from] bapo_data::DataError),
    #[error(transparent)]
    Anchors(#[from] bapo_anchors::AnchorError),
    #[error("objective: {0}")]
    Objective(String),
    #[error("batch: {0}")]
    Batch(String),
    #[error("evaluation: {0}")]
    Eval(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("export: {0}")]
    Export(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "{} already holds a run (metrics.jsonl): pass --resume to continue it, or choose another `output.dir`; nothing was overwritten",
        .0.display()
    )]
    RunExists(PathBuf),
    #[error(
        "{} is in use by another bapo run (pid {holder}); wait for it or choose another `output.dir`; nothing was touched",
        .run.display()
    )]
    Locked { run: PathBuf, holder: String },
    #[error(
        "step {step}: the {what} is not finite (NaN or infinite) on the batch of {data} lines {lines:?}; training stopped, {}",
        match checkpoint { Some(c) => format!("the last good checkpoint is {}", c.display()), None => "no checkpoint was written yet".to_string() }
    )]
    NonFinite {
        step: usize,
        what: String,
        data: PathBuf,
        lines: Vec<usize>,
        checkpoint: Option<PathBuf>,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}
