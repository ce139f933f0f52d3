//! # bapo-study: does BAPO personalise without forgetting?
//!
//! The study (issue #11) compares DPO, KL-DPO, BAPO and MRPO on one question: at the same
//! personalisation, which objective keeps more of what the model knew? Every number it reports
//! carries an interval ([`intervals`]): a paired bootstrap over evaluation items (the same
//! item scored by the reference and by the trained model) and a t-interval over seeds.
//!
//! - [`plan`]: `configs/study.toml` expanded into cells, each an ordinary `bapo train` run;
//! - [`grid`]: the cells run, finished ones skipped and killed ones resumed;
//! - [`data`]: the finished runs' per-item results in one compact file (`data.json`), the
//!   only input of the report, committed so that the report can be recomputed;
//! - [`report`]: the report of that file (tables, frontiers, plots, verdict);
//! - [`stats`]: the statistics of the rebuilt report (issue #22): a seeds-then-clusters
//!   bootstrap, p-values, equivalence, Holm, values at a level, slopes across few units.
//!
//! Light on purpose (no Burn): `xtask` can use it to write the report without building the
//! model stack.

pub mod changes;
pub mod data;
pub mod grid;
pub mod intervals;
pub mod plan;
pub mod plots;
pub mod report;
pub mod stats;

pub use changes::{Change, ChangesError, run_changes};
pub use data::{DataError, StudyData};
pub use grid::{Binaries, CellState, GridError, GridOutcome, run_grid};
pub use intervals::{Interval, IntervalError, paired_bootstrap, t_interval_95};
pub use plan::{Cell, Grid, LogFigure, LogFile, Plan, PlanError, Role, Rules, StudyConfig};
pub use report::{Output, ReportError, render, write_report};
