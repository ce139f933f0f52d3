//! The run's JSONL logs, one JSON object per line, each with its `step`: `metrics.jsonl` and
//! `eval.jsonl` hold numbers (`{"step": s, "loss": 0.69, …}`), `eval_items.jsonl` lists of
//! numbers (`{"step": s, "metric": [item values…], …}`). NaN and infinities, which JSON cannot
//! hold, are written as `null`. This is the one reader of them: a line that is not such an
//! object is an error naming the file and the line, never skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One line of a log: its step and its other fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    step: usize,
    fields: Map<String, Value>,
}

impl Row {
    /// A line of numbers (metrics.jsonl, eval.jsonl).
    pub fn of_values(step: usize, values: &BTreeMap<String, f64>) -> Row {
        let fields = values
            .iter()
            .map(|(name, value)| (name.clone(), number(*value)))
            .collect();
        Row { step, fields }
    }

    /// A line of per-item values (eval_items.jsonl).
    pub fn of_items(step: usize, items: &BTreeMap<String, Vec<f64>>) -> Row {
        let fields = items
            .iter()
            .map(|(name, values)| {
                let values = values.iter().map(|v| number(*v)).collect();
                (name.clone(), Value::Array(values))
            })
            .collect();
        Row { step, fields }
    }

    /// Reads one line; the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Row, String> {
        let value: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let Value::Object(mut fields) = value else {
            return Err("not a JSON object".into());
        };
        let step = fields
            .remove("step")
            .ok_or("no `step`")?
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or("`step` is not a whole number ≥ 0")?;
        Ok(Row { step, fields })
    }

    pub fn step(&self) -> usize {
        self.step
    }

    /// The number `name` (None when the line lacks it, or holds `null` or something else).
    pub fn number(&self, name: &str) -> Option<f64> {
        self.fields.get(name)?.as_f64()
    }

    /// Every field that is a number.
    pub fn numbers(&self) -> BTreeMap<String, f64> {
        self.fields
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_f64()?)))
            .collect()
    }

    /// Every field that is a list of numbers; a list holding `null` (a NaN or infinite value)
    /// or anything else is left out.
    pub fn items(&self) -> BTreeMap<String, Vec<f64>> {
        self.fields
            .iter()
            .filter_map(|(name, value)| {
                let values: Option<Vec<f64>> =
                    value.as_array()?.iter().map(Value::as_f64).collect();
                Some((name.clone(), values?))
            })
            .collect()
    }
}

/// The line as it is written: one JSON object (its keys in the order serde_json keeps).
impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut object = self.fields.clone();
        object.insert("step".into(), self.step.into());
        write!(f, "{}", Value::Object(object))
    }
}

/// A JSON number, or null for NaN and infinities (which JSON cannot hold).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Which line of a log one figure of a run is read from: `last` (the last line that holds
/// the key: the end of the run), `max` (the largest value over all lines) or `step N` (the
/// first line of step N; a resumed run may log a step twice, both lines alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Last,
    Max,
    Step(usize),
}

impl Pick {
    /// The number `key` of the line(s) of `rows` this pick names; None when none of them holds
    /// it as a number (absent, or `null`: not finite).
    pub fn from_rows(self, rows: &[Row], key: &str) -> Option<f64> {
        let mut values = rows
            .iter()
            .filter_map(|row| Some((row.step, row.number(key)?)));
        match self {
            Pick::Last => values.next_back().map(|(_, v)| v),
            Pick::Max => values.map(|(_, v)| v).reduce(f64::max),
            Pick::Step(step) => values.find(|(s, _)| *s == step).map(|(_, v)| v),
        }
    }
}

impl std::str::FromStr for Pick {
    type Err = String;

    fn from_str(text: &str) -> Result<Pick, String> {
        let step = text
            .strip_prefix("step ")
            .map(|n| n.trim().parse::<usize>());
        match (text, step) {
            ("last", _) => Ok(Pick::Last),
            ("max", _) => Ok(Pick::Max),
            (_, Some(Ok(step))) => Ok(Pick::Step(step)),
            _ => Err(format!(
                "{text:?}: expected \"last\", \"max\" or \"step N\" (N a whole number)"
            )),
        }
    }
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::Last => write!(f, "last"),
            Pick::Max => write!(f, "max"),
            Pick::Step(step) => write!(f, "step {step}"),
        }
    }
}

/// A log that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}, line {line}: {detail}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

impl LogError {
    /// The log's path.
    pub fn path(&self) -> &Path {
        match self {
            LogError::Read { path, .. } | LogError::Line { path, .. } => path,
        }
    }

    /// What is wrong, without the path (for a message that names the file its own way).
    pub fn detail(&self) -> String {
        match self {
            LogError::Read { error, .. } => error.to_string(),
            LogError::Line { line, detail, .. } => format!("line {line}: {detail}"),
        }
    }
}

/// Every line of the log at `path`, in file order (blank lines are skipped).
pub fn read_rows(path: &Path) -> Result<Vec<Row>, LogError> {
    let text = std::fs::read_to_string(path).map_err(|error| LogError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            Row::parse(line).map_err(|detail| LogError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                detail,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_row_of_values_is_written_with_nan_as_null_and_read_back() {
        let row = Row::of_values(3, &values(&[("loss", 0.5), ("b/x", f64::NAN)]));
        let line = row.to_string();
        assert_eq!(line, r#"{"b/x":null,"loss":0.5,"step":3}"#);
        let back = Row::parse(&line).unwrap();
        assert_eq!(back.step(), 3);
        assert_eq!(back.number("loss"), Some(0.5));
        assert_eq!(back.number("b/x"), None);
        assert_eq!(back.numbers(), values(&[("loss", 0.5)]));
    }

    #[test]
    fn a_row_of_items_leaves_out_lists_holding_null() {
        let items: BTreeMap<String, Vec<f64>> = [
            ("a".to_string(), vec![1.0, 2.0]),
            ("b".to_string(), vec![1.0, f64::INFINITY]),
        ]
        .into();
        let line = Row::of_items(0, &items).to_string();
        assert_eq!(line, r#"{"a":[1.0,2.0],"b":[1.0,null],"step":0}"#);
        let back = Row::parse(&line).unwrap().items();
        assert_eq!(back, [("a".to_string(), vec![1.0, 2.0])].into());
    }

    #[test]
    fn a_name_that_needs_escaping_is_escaped() {
        let line = Row::of_values(1, &values(&[("a\"b", 1.0)])).to_string();
        assert_eq!(Row::parse(&line).unwrap().number("a\"b"), Some(1.0));
    }

    #[test]
    fn a_pick_reads_the_last_line_holding_the_key_the_largest_value_or_a_step() {
        let rows = [
            Row::of_values(1, &values(&[("g", 4.0), ("v", 0.5)])),
            Row::of_values(2, &values(&[("g", 9.0)])),
            Row::of_values(2, &values(&[("g", 9.0)])),
            Row::of_values(3, &values(&[("g", f64::NAN), ("v", 0.25)])),
            Row::of_values(4, &values(&[("g", 2.0)])),
        ];
        assert_eq!(Pick::Last.from_rows(&rows, "g"), Some(2.0));
        assert_eq!(Pick::Last.from_rows(&rows, "v"), Some(0.25));
        assert_eq!(Pick::Max.from_rows(&rows, "g"), Some(9.0));
        assert_eq!(Pick::Step(1).from_rows(&rows, "g"), Some(4.0));
        assert_eq!(
            Pick::Step(3).from_rows(&rows, "g"),
            None,
            "NaN is written as null"
        );
        assert_eq!(Pick::Step(5).from_rows(&rows, "g"), None);
        assert_eq!(Pick::Max.from_rows(&rows, "absent"), None);
    }

    #[test]
    fn a_pick_is_read_from_its_text_and_written_back() {
        for (text, pick) in [
            ("last", Pick::Last),
            ("max", Pick::Max),
            ("step 1", Pick::Step(1)),
        ] {
            assert_eq!(text.parse::<Pick>(), Ok(pick));
            assert_eq!(pick.to_string(), text);
        }
        for bad in ["first", "step", "step -1", "step x", "Last"] {
            let error = bad.parse::<Pick>().unwrap_err();
            assert!(error.contains("expected \"last\""), "{bad}: {error}");
        }
    }

    #[test]
    fn a_bad_line_is_an_error_naming_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("bapo-rundir-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        for (text, detail) in [
            ("{\"step\":1}\n\n[1]\n", "line 3: not a JSON object"),
            ("{\"step\":1}\n{\"loss\":1}\n", "line 2: no `step`"),
            (
                "{\"step\":-1}\n",
                "line 1: `step` is not a whole number ≥ 0",
            ),
            ("{\"step\":1}\n{\"step\":2,\n", "line 2: EOF while parsing"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = read_rows(&path).unwrap_err().to_string();
            let expected = format!("{}, {detail}", path.display());
            assert!(error.starts_with(&expected), "{error} vs {expected}");
        }
        std::fs::write(&path, "{\"step\":1,\"loss\":2}\n\n{\"step\":2}\n").unwrap();
        let steps: Vec<usize> = read_rows(&path).unwrap().iter().map(Row::step).collect();
        assert_eq!(steps, [1, 2]);
        let missing = dir.join("absent.jsonl");
        let error = read_rows(&missing).unwrap_err();
        assert_eq!(error.path(), missing);
        std::fs::remove_dir_all(&dir).ok();
    }
}
