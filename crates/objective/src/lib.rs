//! # bapo-objective: the objective plugin API
//!
//! An objective ([`Objective`]) declares the named [`Quantity`] values it [`Needs`] — policy
//! and reference log-probs of chosen / rejected / base responses, token counts, token-level KL —
//! and turns a batch of them ([`Quantities`]) into per-example losses plus detached
//! [`Metrics`]. Values are Burn tensors, so gradients flow on whatever backend the loop runs.
//!
//! Objectives register themselves with [`register_objective!`]; [`registry`] finds them by name.
//! Their settings are a serde struct ([`ObjectiveConfig`]) parsed from the `[objective]` table
//! of a run config, with typed errors ([`ObjectiveConfigError`]) that name the offending key.
//!
//! The formulas of the built-in objectives are in `docs/objectives.md`; adding one is
//! walked through in `docs/adding-an-objective.md`.

pub mod config;
pub mod error;
pub mod kl;
pub mod objective;
pub mod output;
pub mod preference;
pub mod quantity;
pub mod registry;

pub use config::{ObjectiveConfig, check, defaults_table, parse_config, plain_serde_message};
pub use error::ObjectiveConfigError;
pub use objective::{Objective, ObjectiveName, ObjectivePlugin};
pub use output::{Metrics, ObjectiveOutput};
pub use quantity::{KlDirection, Needs, ObjectiveError, Quantities, Quantity, Response};
pub use registry::ObjectiveEntry;

/// Re-exported so that [`register_objective!`] works without a direct `inventory` dependency.
pub use inventory;
