//! # bapo-study: does BAPO personalise without forgetting?
//!
//! The study (issue #11) compares DPO, KL-DPO, BAPO and MRPO on one question: at the same
//! personalisation, which objective keeps more of what the model knew? Every number it reports
//! carries an interval ([`intervals`]): a paired bootstrap over evaluation items (the same
//! item scored by the reference and by the trained model) and a t-interval over seeds.
//!
//! - [`plan`]: `configs/study.toml` expanded into cells, each an ordinary `bapo train` run;
//! - [`grid`]: the cells run, finished ones skipped and killed ones resumed;
//! - [`report`]: the report of the cells' run directories (tables, plots, verdict).
//!
//! Light on purpose (no Burn): `xtask` can use it to write the report without building the
//! model stack.

pub mod changes;
pub mod grid;
pub mod intervals;
pub mod plan;
pub mod plots;
pub mod report;
pub mod results;

pub use changes::{Change, ChangesError, run_changes};
pub use grid::{CellState, GridError, GridOutcome, run_grid};
pub use intervals::{Interval, IntervalError, paired_bootstrap, t_interval_95};
pub use plan::{Cell, Grid, Plan, PlanError, StudyConfig};
pub use report::write_report;
