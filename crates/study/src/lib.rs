//! # bapo-study: does BAPO personalise without forgetting?
//!
//! The study (issue #11) compares DPO, KL-DPO, BAPO and MRPO on one question: at the same
//! personalisation, which objective keeps more of what the model knew? Every number it reports
//! carries an interval ([`intervals`]): a paired bootstrap over evaluation items (the same
//! item scored by the reference and by the trained model) and a t-interval over seeds.
//!
//! Light on purpose (no Burn): `xtask` can use it to write the report without building the
//! model stack.

pub mod changes;
pub mod intervals;

pub use changes::{Change, ChangesError, run_changes};
pub use intervals::{Interval, IntervalError, paired_bootstrap, t_interval_95};
