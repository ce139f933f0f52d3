//! TRL's preference formats in JSONL and Parquet, with validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{DataError, NumberedRow};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A prompt: plain text, or the messages before the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

/// A response: plain text, or the assistant message(s) that answer the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Text(String),
    Messages(Vec<Message>),
}

impl Completion {
    /// Whether there is nothing to score.
    pub fn is_empty(&self) -> bool {
        match self {
            Completion::Text(t) => t.trim().is_empty(),
            Completion::Messages(m) => m.iter().all(|m| m.content.trim().is_empty()),
        }
    }
}

/// One preference example and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceExample {
    pub prompt: Prompt,
    pub chosen: Completion,
    pub rejected: Completion,
    /// Who holds this preference (personalisation); `None` when the file does not say.
    pub user: Option<String>,
    /// A base response supplied with the data (otherwise anchors are generated).
    pub base: Option<Completion>,
    /// What the example is about (a country, an element…); train/test splits never share one.
    pub entity: Option<String>,
    /// 1-based line in the file (the row, in a Parquet file).
    pub line: usize,
}

/// Why a valid row was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    EmptyCompletion,
    PromptOverBudget,
}

impl DropReason {
    /// A short description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::EmptyCompletion => "empty chosen or rejected completion",
            DropReason::PromptOverBudget => "prompt alone over the length budget",
        }
    }
}

/// A dropped row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRow {
    pub line: usize,
    pub reason: DropReason,
    /// The row's `user`, so that a selection can say why a user has no rows left.
    pub user: Option<String>,
}

/// The examples of one file, and what was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub path: PathBuf,
    pub examples: Vec<PreferenceExample>,
    pub dropped: Vec<DroppedRow>,
}

impl Dataset {
    /// How many rows were dropped for each reason.
    pub fn drop_counts(&self) -> BTreeMap<DropReason, usize> {
        let mut counts = BTreeMap::new();
        for d in &self.dropped {
            *counts.entry(d.reason).or_insert(0) += 1;
        }
        counts
    }

    /// The users named in the data, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .examples
            .iter()
            .filter_map(|e| e.user.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Only the examples of `user`; an unknown user is an error listing the known ones.
    pub fn for_user(&self, user: &str) -> Result<Dataset, DataError> {
        let examples: Vec<_> = self
            .examples
            .iter()
            .filter(|e| e.user.as_deref() == Some(user))
            .cloned()
            .collect();
        if examples.is_empty() {
            return Err(DataError::UnknownUser {
                path: self.path.clone(),
                user: user.to_string(),
                known: self.users(),
            });
        }
        Ok(Dataset {
            path: self.path.clone(),
            examples,
            dropped: self.dropped.clone(),
        })
    }
}

/// One line of the file as text: UTF-8 without a byte-order mark (JSON Lines are UTF-8, and
/// JSON parsers refuse a BOM), with a trailing `\r` dropped.
fn utf8_line<'a>(raw: &'a [u8], row: &Row) -> Result<&'a str, DataError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(row.invalid(
            "the line begins with a UTF-8 byte-order mark (EF BB BF); save the file as UTF-8 without it",
        ));
    }
    std::str::from_utf8(raw).map_err(|e| {
        let at = e.valid_up_to();
        row.invalid(&format!(
            "not valid UTF-8: byte {:#04X} at byte {} of the line; JSON Lines files are UTF-8",
            raw[at],
            at + 1
        ))
    })
}

/// What kind of rows a file holds; all rows must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Standard,
    Conversational,
}

/// Reads a preference file: Parquet when its name ends in `.parquet` (rows numbered from 1
/// where a JSONL line number would be), JSON Lines otherwise.
pub fn load_preferences(path: &Path) -> Result<Dataset, DataError> {
    if is_parquet(path) {
        let rows = crate::parquet_rows::read_rows(path)?;
        examples_of_rows(path, rows.into_iter().map(Ok))
    } else {
        load_jsonl(path)
    }
}

/// The examples of a dataset kept in several files (the shards of a Hugging Face split), in
/// order, as one dataset named `name`: rows are numbered on from one file to the next. One
/// file reads as [`load_preferences`] reads it.
pub fn load_preference_files(files: &[PathBuf], name: &Path) -> Result<Dataset, DataError> {
    if let [one] = files {
        return load_preferences(one);
    }
    let mut all = Dataset {
        path: name.to_path_buf(),
        examples: Vec::new(),
        dropped: Vec::new(),
    };
    let mut rows_before = 0;
    for file in files {
        let mut part = load_preferences(file)?;
        let rows = part
            .examples
            .iter()
            .map(|e| e.line)
            .chain(part.dropped.iter().map(|d| d.line))
            .max()
            .unwrap_or(0);
        part.examples.iter_mut().for_each(|e| e.line += rows_before);
        part.dropped.iter_mut().for_each(|d| d.line += rows_before);
        all.examples.append(&mut part.examples);
        all.dropped.append(&mut part.dropped);
        rows_before += rows;
    }
    Ok(all)
}

/// Whether `path` names a Parquet file (by its extension, as `datasets` names them).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Reads a preference JSONL file (blank lines are skipped).
pub fn load_jsonl(path: &Path) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let rows = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(index, raw)| {
            let line = index + 1;
            let row = Row { path, line };
            let object = utf8_line(raw, &row).and_then(|raw| {
                if raw.trim().is_empty() {
                    return Ok(None);
                }
                let value =
                    crate::json::parse_without_repeated_keys(raw).map_err(|e| DataError::Json {
                        path: path.to_path_buf(),
                        line,
                        message: e.to_string(),
                    })?;
                match value {
                    Value::Object(object) => Ok(Some(object)),
                    _ => Err(row.invalid("a row must be a JSON object")),
                }
            });
            object.transpose().map(|object| object.map(|o| (line, o)))
        });
    examples_of_rows(path, rows)
}

/// The dataset of `path` from its rows: each validated, all of one kind, those with an empty
/// completion dropped and counted.
fn examples_of_rows(
    path: &Path,
    rows: impl Iterator<Item = Result<NumberedRow, DataError>>,
) -> Result<Dataset, DataError> {
    let mut examples = Vec::new();
    let mut dropped = Vec::new();
    let mut kind: Option<(Kind, usize)> = None;
    for row in rows {
        let (line, object) = row?;
        let row = Row { path, line };
        let example = row.parse(&object)?;
        let this = if matches!(example.chosen, Completion::Messages(_)) {
            Kind::Conversational
        } else {
            Kind::Standard
        };
        match kind {
            None => kind = Some((this, line)),
            Some((first, first_line)) if first != this => {
                return Err(row.invalid(&format!(
                    "this row is {} but line {first_line} is {}; a file holds one format",
                    name(this),
                    name(first)
                )));
            }
            Some(_) => {}
        }
        if example.chosen.is_empty() || example.rejected.is_empty() {
            dropped.push(DroppedRow {
                line,
                reason: DropReason::EmptyCompletion,
                user: example.user.clone(),
            });
        } else {
            examples.push(example);
        }
    }
    if examples.is_empty() && dropped.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        examples,
        dropped,
    })
}

fn name(kind: Kind) -> &'static str {
    match kind {
        Kind::Standard => "standard (strings)",
        Kind::Conversational => "conversational (message lists)",
    }
}

/// Parsing context of one row, for messages.
struct Row<'a> {
    path: &'a Path,
    line: usize,
}

impl Row<'_> {
    fn invalid(&self, message: &str) -> DataError {
        DataError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line,
            message: message.to_string(),
        }
    }

    fn wrong_type(&self, field: &str, expected: &str) -> DataError {
        DataError::WrongType {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.to_string(),
            expected: expected.to_string(),
        }
    }

    fn missing(&self, field: &str) -> DataError {
        DataError::MissingField {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.to_string(),
        }
    }

    fn messages(&self, field: &str, value: &Value) -> Result<Vec<Message>, DataError> {
        let list = value
            .as_array()
            .ok_or_else(|| self.wrong_type(field, "a list of messages"))?;
        list.iter()
            .enumerate()
            .map(|(i, m)| {
                let entry = format!("{field}[{i}]");
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.wrong_type(&format!("{entry}.role"), "a string"))?;
                let content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.wrong_type(&format!("{entry}.content"), "a string"))?;
                Ok(Message {
                    role: role.to_string(),
                    content: content.to_string(),
                })
            })
            .collect()
    }

    /// A completion field: a string (standard) or a message list (conversational).
    fn completion(&self, field: &str, value: &Value) -> Result<Completion, DataError> {
        match value {
            Value::String(s) => Ok(Completion::Text(s.clone())),
            Value::Array(_) => Ok(Completion::Messages(self.messages(field, value)?)),
            _ => Err(self.wrong_type(field, "a string or a list of messages")),
        }
    }

    fn parse(
        &self,
        object: &serde_json::Map<String, Value>,
    ) -> Result<PreferenceExample, DataError> {
        let field = |name: &str| object.get(name).ok_or_else(|| self.missing(name));
        let mut chosen = self.completion("chosen", field("chosen")?)?;
        let mut rejected = self.completion("rejected", field("rejected")?)?;
        let prompt = match (object.get("prompt"), &mut chosen, &mut rejected) {
            (Some(Value::String(p)), Completion::Text(_), Completion::Text(_)) => {
                Prompt::Text(p.clone())
            }
            (Some(p @ Value::Array(_)), Completion::Messages(_), Completion::Messages(_)) => {
                Prompt::Messages(self.messages("prompt", p)?)
            }
            // TRL's implicit prompt: whole conversations whose shared prefix is the prompt.
            (None, Completion::Messages(c), Completion::Messages(r)) => {
                let shared = c.iter().zip(r.iter()).take_while(|(a, b)| a == b).count();
                if shared == 0 {
                    return Err(self.invalid("no `prompt`, and `chosen` and `rejected` share no leading messages to use as one"));
                }
                let prompt = c[..shared].to_vec();
                *c = c[shared..].to_vec();
                *r = r[shared..].to_vec();
                Prompt::Messages(prompt)
            }
            (None, Completion::Text(_), _) => return Err(self.missing("prompt")),
            (Some(_), Completion::Text(_), Completion::Text(_)) => {
                return Err(self.wrong_type("prompt", "a string"));
            }
            (Some(_), Completion::Messages(_), Completion::Messages(_)) => {
                return Err(self.wrong_type("prompt", "a list of messages"));
            }
            _ => {
                return Err(self.invalid(
                    "`chosen` and `rejected` must both be strings or both message lists",
                ));
            }
        };
        let user = match object.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.clone()),
            Some(_) => return Err(self.wrong_type("user", "a string")),
        };
        let entity = match object.get("entity") {
            None | Some(Value::Null) => None,
            Some(Value::String(e)) => Some(e.clone()),
            Some(_) => return Err(self.wrong_type("entity", "a string")),
        };
        let base = match object.get("base") {
            None | Some(Value::Null) => None,
            Some(value) => Some(self.completion("base", value)?),
        };
        Ok(PreferenceExample {
            prompt,
            chosen,
            rejected,
            user,
            base,
            entity,
            line: self.line,
        })
    }
}
