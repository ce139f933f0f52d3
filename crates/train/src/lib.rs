//! # bapo-train: the training loop
//!
//! One loop for every backend (the `Device` picks it, see [`Backend`]): run config
//! ([`config`]), everything before the first step ([`prepare`]: model, data, anchors,
//! evaluation sets), the micro-batch step (`step.rs`: one policy forward over
//! `[chosen; rejected; base]`, the objective's quantities, per-example losses), AdamW with
//! PyTorch's semantics and global-norm clipping ([`optimizer`]), the learning-rate schedule
//! (`schedule.rs`), atomic checkpoints with exact resume ([`checkpoint`]), logs and plots
//! (`metrics.rs`, `plots.rs`, `tensorboard.rs`) and the forgetting/personalisation evaluation
//! (`eval.rs`). Everything that stops a run is a [`TrainError`] (`error.rs`).
//!
//! [`train`] is the library entry point: a binary that links further objective crates and
//! calls it trains them with nothing else changed.

// The public surface: the run config's schema, the checkpoint format and the optimizer are
// modules of their own (tools and tests read checkpoints and step AdamW); everything else is
// reached through the names re-exported below.
pub mod checkpoint;
pub mod config;
pub mod optimizer;
pub mod probes;

mod answers;
mod backend;
mod bench;
mod error;
mod eval;
mod eval_cache;
mod example;
mod items;
mod metrics;
mod optimizer_step;
mod params;
mod plots;
mod prepare;
mod progress;
mod run;
mod rundir;
mod schedule;
mod step;
mod tensorboard;

pub use backend::{Backend, BackendDevice, BackendError};
pub use bench::{BenchResult, bench_anchors, bench_eval, bench_generate, bench_train};
pub use config::{RunConfig, RunConfigError};
pub use error::{TrainError, with_causes};
pub use eval::{BatchLimits, Evaluation};
pub use example::{AnchoredExample, ReferenceLogps};
pub use metrics::read_log;
pub use optimizer::OptimizerStateError;
pub use params::{ParameterError, trainable_parameters};
pub use prepare::{Prepared, prepare};
pub use progress::Progress;
pub use run::{RunSummary, TrainOptions, evaluate_run, export_run, train};

// A unit test, not an integration test: it drives the crate's own step code
// (`optimizer_step`, `StepSetup`) on hand-made examples, as step/staged_tests.rs does.
#[cfg(test)]
#[path = "precision_tests.rs"]
mod precision_tests;
