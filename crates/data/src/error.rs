//! What the readers of preference files share: the error that names the file, line and field,
//! and a row as the readers hand it to the one validation (format.rs) — a JSONL line or a
//! Parquet row, numbered from 1.

use std::path::PathBuf;

use serde_json::Value;

/// A problem with a data file; each names the file, and the line and field where it applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}:{line}: not valid JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: missing field `{field}`")]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
    },
    #[error("{path}:{line}: field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        path: PathBuf,
        line: usize,
        field: String,
        expected: String,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no examples")]
    Empty { path: PathBuf },
    #[error("{path}: no examples for user `{user}`; users in the file: {}", known.join(", "))]
    UnknownUser {
        path: PathBuf,
        user: String,
        known: Vec<String>,
    },
}

/// A row of a preference file: its line (or Parquet row) number, and its fields.
pub(crate) type NumberedRow = (usize, serde_json::Map<String, Value>);
