//! Typed errors of the objective API.

use crate::quantity::Quantity;

/// A configuration problem, found when an objective is built from its `[objective]` table.
/// Every variant names the objective and the key, so that a user can find the line to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveConfigError {
    #[error("unknown objective `{name}`; known objectives: {}", known.join(", "))]
    UnknownObjective { name: String, known: Vec<String> },

    #[error("the [objective] table has no `name` key; known objectives: {}", known.join(", "))]
    MissingName { known: Vec<String> },

    #[error("objective `{objective}` is registered {count} times; each name must be unique")]
    DuplicateObjective { objective: String, count: usize },

    #[error("objective `{objective}`: unknown key `objective.{key}`; known keys: {}", known.join(", "))]
    UnknownKey {
        objective: String,
        key: String,
        known: Vec<String>,
    },

    #[error("objective `{objective}`: invalid value for `objective.{key}`: {message}")]
    InvalidValue {
        objective: String,
        key: String,
        message: String,
    },

    #[error(
        "objective `{objective}`: `objective.{key}` = {value} is out of range: expected {expected}"
    )]
    OutOfRange {
        objective: String,
        key: String,
        value: String,
        expected: String,
    },
}

/// A problem with the quantities handed to an objective. These are bugs in the caller (the
/// loop did not provide what `needs()` asked for), reported instead of panicking.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    #[error("missing quantity: {0}")]
    MissingQuantity(Quantity),

    #[error("{quantity}: expected shape {expected}, found {found}")]
    Shape {
        quantity: Quantity,
        expected: String,
        found: String,
    },

    #[error("no quantities were given")]
    Empty,
}
