//! The statistics of the study's report (issue #22): intervals that carry every source of
//! noise the study has, tests read off them, and a correction for testing many comparisons.
//!
//! The data of one setting: for each run (one seed) the per-item values of a metric, the items
//! aligned across runs (item i is the same question in every run), and for each item a
//! cluster (e.g. the country it is about: items about one country are correlated).
//!
//! - [`hierarchical`]: a two-level bootstrap, seeds then clusters, of any statistic of a
//!   [`Draw`]; per-cluster sums make a mean under a draw cheap ([`ClusterSums`]);
//! - [`decision`]: p-values read off the resampled values (differs from 0, one-sided, TOST
//!   equivalence within a margin declared in advance) and the decision they support;
//! - [`multiplicity`]: Holm–Bonferroni over a family of p-values;
//! - [`curve`]: a curve's value where it first reaches a declared level (retention at a
//!   personalisation level);
//! - [`slope`]: a least-squares slope across a handful of units whose x and y are both
//!   estimates, with a bootstrap over units and within them, and the t-interval as a check.
//!
//! Everything is reproducible: each bootstrap draws from a generator seeded explicitly.

pub mod curve;
pub mod decision;
pub mod hierarchical;
pub mod multiplicity;
pub mod slope;

pub use curve::{curve_under, value_at_level};
pub use decision::{Decision, Sign, decide};
pub use hierarchical::{
    Bootstrap, ClusterSums, Clusters, Draw, cluster_bootstrap, difference_interval,
    hierarchical_interval, mean_interval,
};
pub use multiplicity::{Holm, holm};
pub use slope::{Slope, Unit, ols_slope, ols_t_interval_95, slope_interval};

/// Inputs a statistic cannot be computed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("no items: a bootstrap needs at least one item (and so one cluster)")]
    NoItems,
    #[error("no seeds: a setting needs at least one run")]
    NoSeeds,
    #[error("a run has {got} items where the clusters describe {expected}")]
    Items { expected: usize, got: usize },
    #[error("{a} seeds against {b}: settings are compared run by run, so need as many seeds")]
    Seeds { a: usize, b: usize },
    #[error("no resamples asked for")]
    NoResamples,
    #[error("level {0} must be in (0, 1)")]
    Level(f64),
    #[error("alpha {0} must be in (0, 1)")]
    Alpha(f64),
    #[error("the equivalence margin {0} must be positive and finite")]
    Margin(f64),
    #[error("p-value {0} is not in [0, 1]")]
    PValue(f64),
    #[error("a value is not finite")]
    NotFinite,
    #[error("unit {0} has no x items: its x cannot be estimated")]
    EmptyUnit(usize),
    #[error("the units' x are all equal (or fewer than 2 units): no slope")]
    NoSlope,
}

/// Whether `[low, high]` has no width, up to rounding (a relative 1e-9): an interval of
/// identical seeds or items is "all equal", not a certainty, and the report should say so.
pub fn zero_width(low: f64, high: f64) -> bool {
    let scale = 1.0_f64.max(low.abs()).max(high.abs());
    (high - low).abs() <= 1e-9 * scale
}

/// `level` checked to be a two-sided interval's coverage, in (0, 1).
fn check_level(level: f64) -> Result<(), StatsError> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(StatsError::Level(level))
    }
}

/// The `(1 − level)/2` and `(1 + level)/2` quantiles of sorted `values` (numpy's linear rule,
/// as every other interval of the study).
fn percentile_bounds(sorted: &[f64], level: f64) -> (f64, f64) {
    let tail = (1.0 - level) / 2.0;
    (
        crate::intervals::quantile(sorted, tail),
        crate::intervals::quantile(sorted, 1.0 - tail),
    )
}
