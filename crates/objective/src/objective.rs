//! The objective traits.

use crate::config::ObjectiveConfig;
use crate::output::ObjectiveOutput;
use crate::quantity::ObjectiveError;
use crate::quantity::{Needs, Quantities};

/// A preference-optimisation loss. It names the quantities it needs and computes per-example
/// losses and detached metrics from them; it never sees the model, the data or the backend.
/// Its name comes from [`ObjectiveName`], which registration implements.
pub trait Objective: ObjectiveName + Send + Sync + std::fmt::Debug {
    /// What the loop must compute for every batch.
    fn needs(&self) -> Needs;

    /// Per-example losses and metrics from the batch's quantities. Returns an error (instead
    /// of panicking) when a needed quantity is missing or mis-shaped.
    fn compute(&self, quantities: &Quantities) -> Result<ObjectiveOutput, ObjectiveError>;
}

/// The registered name of an objective (`dpo`, `bapo`, …).
/// [`register_objective!`](crate::register_objective) implements it from the plugin's
/// [`ObjectivePlugin::NAME`]; an objective that is never registered implements it by hand.
pub trait ObjectiveName {
    fn name(&self) -> &'static str;
}

/// An objective that can be registered: a name, a summary and a config type. Implement this
/// and [`Objective`], then add one line, `bapo_objective::register_objective!(YourType);`.
pub trait ObjectivePlugin: Objective + Sized + 'static {
    /// The name used in configs and on the command line.
    const NAME: &'static str;
    /// One line for `bapo objectives`.
    const SUMMARY: &'static str;
    /// The `[objective]` settings.
    type Config: ObjectiveConfig;

    /// Builds the objective from a validated config.
    fn new(config: Self::Config) -> Self;
}
