//! Preference rows from a Parquet file, as the Hugging Face `datasets` library writes them
//! (and as the hub serves datasets): one row per example, with TRL's columns, `prompt` /
//! `chosen` / `rejected` as strings or lists of `{role, content}` messages. Each row becomes
//! the JSON object a JSONL line would hold, so both formats share one validation
//! (format.rs) and the same errors, with the row (1-based) where a line would be.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use crate::error::{DataError, NumberedRow};

/// The columns a preference row is read from; others (ids, scores, images) are left alone.
const COLUMNS: [&str; 6] = ["prompt", "chosen", "rejected", "user", "entity", "base"];

/// The rows of the Parquet file at `path`, numbered from 1, with the [`COLUMNS`] it has. A
/// null column is left out of its row, as a JSONL line leaves out a key it does not have.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<NumberedRow>, DataError> {
    let file_error = |message: String| DataError::Io {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| file_error(format!("not a readable Parquet file: {e}")))?;
    // The codecs built in: what `datasets` and the hub write by default.
    let codecs = |e: parquet::errors::ParquetError| {
        let hint = if e.to_string().contains("Disabled feature") {
            "; bapo reads Parquet that is uncompressed or Snappy-compressed (as `datasets` writes it)"
        } else {
            ""
        };
        format!("{e}{hint}")
    };
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| file_error(format!("reading its rows: {}", codecs(e))))?;
    let mut out = Vec::new();
    for (index, row) in rows.enumerate() {
        let line = index + 1;
        let row = row.map_err(|e| DataError::Invalid {
            path: path.to_path_buf(),
            line,
            message: format!("reading the row: {}", codecs(e)),
        })?;
        let at = |column: &str, kind: &str| DataError::WrongType {
            path: path.to_path_buf(),
            line,
            field: column.to_string(),
            expected: format!("text or a list of messages (this column holds {kind})"),
        };
        out.push((line, columns(&row, &at)?));
    }
    Ok(out)
}

/// A row's [`COLUMNS`] as a JSON object.
fn columns(
    row: &Row,
    at: &dyn Fn(&str, &str) -> DataError,
) -> Result<Map<String, Value>, DataError> {
    fields(row, "", &|name| COLUMNS.contains(&name), at)
}

/// The fields of a row or struct value that `wanted` names, as a JSON object, null ones left
/// out; `prefix` names where they are (`chosen[0].`).
fn fields(
    row: &Row,
    prefix: &str,
    wanted: &dyn Fn(&str) -> bool,
    at: &dyn Fn(&str, &str) -> DataError,
) -> Result<Map<String, Value>, DataError> {
    let mut out = Map::new();
    for (name, field) in row.get_column_iter().filter(|(name, _)| wanted(name)) {
        let value = value(field, &format!("{prefix}{name}"), at)?;
        if !value.is_null() {
            out.insert(name.clone(), value);
        }
    }
    Ok(out)
}

/// A field as JSON; text, numbers, booleans, lists and structs only (`column` names it).
fn value(
    field: &Field,
    column: &str,
    at: &dyn Fn(&str, &str) -> DataError,
) -> Result<Value, DataError> {
    let number = |n: Option<Number>| n.map_or(Value::Null, Value::Number);
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(x) => number(Number::from_f64(f64::from(*x))),
        Field::Double(x) => number(Number::from_f64(*x)),
        Field::Str(text) => Value::String(text.clone()),
        Field::Group(row) => Value::Object(fields(row, &format!("{column}."), &|_| true, at)?),
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .enumerate()
                .map(|(i, element)| value(element, &format!("{column}[{i}]"), at))
                .collect::<Result<_, _>>()?,
        ),
        Field::Bytes(_) => return Err(at(column, "bytes")),
        Field::MapInternal(_) => return Err(at(column, "a map")),
        Field::Float16(_) | Field::Decimal(_) => {
            return Err(at(column, "a number of another kind"));
        }
        Field::Date(_)
        | Field::TimeMillis(_)
        | Field::TimeMicros(_)
        | Field::TimestampMillis(_)
        | Field::TimestampMicros(_) => return Err(at(column, "a date or time")),
    })
}
