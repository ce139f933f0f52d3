//! Objective configuration: a serde struct with defaults, read from the `[objective]` table of
//! a run config. Unknown keys, values of the wrong type and out-of-range values are typed
//! errors that name the key.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ObjectiveConfigError;

/// The configuration struct of one objective.
///
/// Every field must have a default and must serialise to a TOML value (so no `Option` fields:
/// TOML has no null). The defaults table is what `bapo objectives` prints and what unknown keys
/// are checked against.
pub trait ObjectiveConfig: Serialize + DeserializeOwned + Default {
    /// Checks ranges and cross-field rules; `objective` is the objective's name, for messages.
    fn validate(&self, objective: &str) -> Result<(), ObjectiveConfigError>;
}

/// The defaults of a config as a TOML table.
pub fn defaults_table<C: ObjectiveConfig>() -> toml::Table {
    // Serialising a plain struct of numbers, strings, booleans and arrays cannot fail. A
    // config that breaks the rule (a `None` field) yields a table without that key, which
    // `every_default_table_builds_its_objective` (tests/registry.rs) would catch for the
    // built-ins.
    toml::Table::try_from(C::default()).unwrap_or_default()
}

/// Parses and validates a config from the settings of an `[objective]` table (without its
/// `name` key).
pub fn parse_config<C: ObjectiveConfig>(
    objective: &str,
    settings: &toml::Table,
) -> Result<C, ObjectiveConfigError> {
    let defaults = defaults_table::<C>();
    let known = || defaults.keys().cloned().collect::<Vec<_>>();

    // Name the first unknown key rather than relying on serde's message.
    if let Some(key) = settings.keys().find(|k| !defaults.contains_key(*k)) {
        return Err(ObjectiveConfigError::UnknownKey {
            objective: objective.to_string(),
            key: key.clone(),
            known: known(),
        });
    }

    // Deserialise each user key on top of the defaults on its own, so a type error names the
    // key that caused it.
    for (key, value) in settings {
        let mut one = defaults.clone();
        one.insert(key.clone(), value.clone());
        if let Err(e) = toml::Value::Table(one).try_into::<C>() {
            return Err(ObjectiveConfigError::InvalidValue {
                objective: objective.to_string(),
                key: key.clone(),
                message: format!(
                    "{value} ({})",
                    plain_serde_message(&first_line(&e.to_string()))
                ),
            });
        }
    }

    let mut merged = defaults.clone();
    for (key, value) in settings {
        merged.insert(key.clone(), value.clone());
    }
    let config: C = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ObjectiveConfigError::InvalidValue {
            objective: objective.to_string(),
            key: "*".to_string(),
            message: plain_serde_message(&first_line(&e.to_string())),
        })?;
    config.validate(objective)?;
    Ok(config)
}

/// A serde message in the words of a config, not of Rust: `expected usize` says "a whole
/// number ≥ 0", `struct LoraSettings` "a table of settings" (issue #26: type names reached
/// users). Used for every config message, the objectives' included.
pub fn plain_serde_message(message: &str) -> String {
    const WORDS: [(&str, &str); 14] = [
        ("usize", "a whole number ≥ 0"),
        ("u64", "a whole number ≥ 0"),
        ("u32", "a whole number ≥ 0"),
        ("u16", "a whole number ≥ 0"),
        ("u8", "a whole number ≥ 0"),
        ("isize", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a sequence", "a list"),
        ("a map", "a table"),
        ("option", "a value"),
        ("a borrowed string", "a string"),
    ];
    // The end of a name: `usize` in "expected usize," but not `u8` in "expected u8x".
    let ends_at = |text: &str, len: usize| {
        !text[len..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut out = String::new();
    let mut rest = message;
    while let Some((at, marker)) = ["expected ", "struct "]
        .into_iter()
        .filter_map(|marker| rest.find(marker).map(|at| (at, marker)))
        .min()
    {
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        if marker == "struct " {
            let len = after
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            out.push_str("a table of settings");
            rest = &after[len..];
        } else {
            out.push_str(marker);
            rest = match WORDS
                .iter()
                .find(|(rust, _)| after.starts_with(rust) && ends_at(after, rust.len()))
            {
                Some((rust, words)) => {
                    out.push_str(words);
                    &after[rust.len()..]
                }
                None => after,
            };
        }
    }
    out.push_str(rest);
    out
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// Helpers for [`ObjectiveConfig::validate`] implementations.
pub mod check {
    use crate::error::ObjectiveConfigError;

    fn out_of_range(
        objective: &str,
        key: &str,
        value: f64,
        expected: &str,
    ) -> ObjectiveConfigError {
        ObjectiveConfigError::OutOfRange {
            objective: objective.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    /// `value > 0` and finite.
    pub fn positive(objective: &str, key: &str, value: f64) -> Result<(), ObjectiveConfigError> {
        if value.is_finite() && value > 0.0 {
            Ok(())
        } else {
            Err(out_of_range(objective, key, value, "a finite number > 0"))
        }
    }

    /// `value >= 0` and finite.
    pub fn non_negative(
        objective: &str,
        key: &str,
        value: f64,
    ) -> Result<(), ObjectiveConfigError> {
        if value.is_finite() && value >= 0.0 {
            Ok(())
        } else {
            Err(out_of_range(objective, key, value, "a finite number >= 0"))
        }
    }

    /// `lo <= value <= hi`.
    pub fn in_range(
        objective: &str,
        key: &str,
        value: f64,
        lo: f64,
        hi: f64,
    ) -> Result<(), ObjectiveConfigError> {
        if value.is_finite() && (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(out_of_range(
                objective,
                key,
                value,
                &format!("a number in [{lo}, {hi}]"),
            ))
        }
    }

    /// A general rule violation on one key.
    pub fn invalid(objective: &str, key: &str, message: impl Into<String>) -> ObjectiveConfigError {
        ObjectiveConfigError::InvalidValue {
            objective: objective.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plain_serde_message;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        steps: usize,
        beta: f64,
        ids: Vec<u32>,
    }

    #[test]
    fn serde_messages_lose_their_rust_type_names() {
        for text in [
            "steps = -1\nbeta = 1.0\nids = []",
            "steps = \"x\"\nbeta = 1.0\nids = []",
            "steps = 1\nbeta = \"x\"\nids = []",
            "steps = 1\nbeta = 1.0\nids = 3",
            "steps = 1\nbeta = 1.0\nids = [-2]",
        ] {
            let message = toml::from_str::<Settings>(text).unwrap_err().to_string();
            let plain = plain_serde_message(&message);
            for rust in ["usize", "f64", "u32", "sequence"] {
                assert!(!plain.contains(rust), "{message} → {plain}");
            }
            assert!(plain.contains("expected a"), "{message} → {plain}");
        }
        assert_eq!(
            plain_serde_message("invalid type: integer, expected struct TrainingSection"),
            "invalid type: integer, expected a table of settings"
        );
        assert_eq!(
            plain_serde_message("expected u8x, f64"),
            "expected u8x, f64"
        );
    }
}
