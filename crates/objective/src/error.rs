//! The typed error of an objective's configuration (the quantities' own error,
//! `ObjectiveError`, lives with them in quantity.rs).

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
