//! The country-knowledge probe (`data/personalised/knowledge.jsonl`, made by `cargo xtask
//! data`): multiple-choice cloze items about the countries the preference data asks about,
//! with the country (`entity`) so that items about trained countries can be left out.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::DataError;
use crate::eval::MultipleChoiceItem;

/// One probe item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeItem {
    /// The country it is about.
    pub entity: String,
    /// `capital`, `subregion` or `border`: a metric per kind.
    pub kind: String,
    pub item: MultipleChoiceItem,
}

/// Where the project keeps the probe (the default of `eval.knowledge_probe`).
pub const BUILT_IN_PROBE_PATH: &str = "data/personalised/knowledge.jsonl";

/// The project's probe, carried by every binary: a run configured outside the project still
/// has it (issue #26: the default path was read from the working directory only).
const BUILT_IN_PROBE: &str = include_str!("../../../data/personalised/knowledge.jsonl");

/// Reads the probe; every malformed line is an error naming the file, the line and the field.
pub fn load_knowledge_probe(path: &Path) -> Result<Vec<ProbeItem>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    parse_knowledge_probe(&text, path)
}

/// The project's probe ([`BUILT_IN_PROBE_PATH`]) as built into the binary.
pub fn built_in_knowledge_probe() -> Result<Vec<ProbeItem>, DataError> {
    parse_knowledge_probe(BUILT_IN_PROBE, Path::new(BUILT_IN_PROBE_PATH))
}

/// The probe items of `text`, read from `path` (named in errors).
fn parse_knowledge_probe(text: &str, path: &Path) -> Result<Vec<ProbeItem>, DataError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Line {
            path: path.to_path_buf(),
            line: index + 1,
        };
        let row = crate::json::parse_without_repeated_keys(line).map_err(|e| DataError::Json {
            path: at.path.clone(),
            line: at.line,
            message: e.to_string(),
        })?;
        let choices: Vec<String> = at
            .field(&row, "choices")?
            .as_array()
            .and_then(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
            .ok_or_else(|| at.wrong_type("choices", "a list of strings"))?;
        let correct =
            at.field(&row, "correct")?
                .as_u64()
                .ok_or_else(|| at.wrong_type("correct", "a whole number"))? as usize;
        if choices.len() < 2 || correct >= choices.len() {
            return Err(DataError::Invalid {
                path: at.path,
                line: at.line,
                message: format!(
                    "`correct` is {correct} but there are {} choices (at least 2 needed)",
                    choices.len()
                ),
            });
        }
        items.push(ProbeItem {
            entity: at.string(&row, "entity")?,
            kind: at.string(&row, "kind")?,
            item: MultipleChoiceItem {
                question: at.string(&row, "prompt")?,
                choices,
                correct,
            },
        });
    }
    if items.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(items)
}

/// Where a field is read from, for its errors.
struct Line {
    path: PathBuf,
    line: usize,
}

impl Line {
    fn field<'a>(&self, row: &'a Value, name: &str) -> Result<&'a Value, DataError> {
        row.get(name).ok_or_else(|| DataError::MissingField {
            path: self.path.clone(),
            line: self.line,
            field: name.to_string(),
        })
    }

    fn string(&self, row: &Value, name: &str) -> Result<String, DataError> {
        self.field(row, name)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.wrong_type(name, "a string"))
    }

    fn wrong_type(&self, name: &str, expected: &str) -> DataError {
        DataError::WrongType {
            path: self.path.clone(),
            line: self.line,
            field: name.to_string(),
            expected: expected.to_string(),
        }
    }
}
