//! JSON rows read with every object's keys checked for repeats. serde_json keeps the last of
//! a repeated key, so `{"chosen": "a", "chosen": "b"}` trained on "b" without a word (issue
//! #26); here the row is refused, naming the key.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `text` as one JSON value; a key repeated within an object is an error naming it.
pub fn parse_without_repeated_keys(text: &str) -> Result<Value, serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(text);
    let Checked(value) = Checked::deserialize(&mut reader)?;
    reader.end()?;
    Ok(value)
}

/// A value whose objects were read key by key, refusing a repeat.
struct Checked(Value);

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(Checked(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(Checked(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(Checked(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        Ok(Checked(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(Checked(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(Checked(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut items = Vec::new();
        while let Some(Checked(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Checked(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            let Checked(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Checked(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_serde_json_reads_them_and_repeated_keys_are_refused() {
        let text = r#"{"a": [1, -2, 2.5, "x", null, true, {"b": {}}], "c": 18446744073709551615}"#;
        assert_eq!(
            parse_without_repeated_keys(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        let repeated = r#"{"prompt": "p", "chosen": "a", "chosen": "b"}"#;
        let err = parse_without_repeated_keys(repeated)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`chosen` appears twice"), "{err}");
        let nested = r#"[{"role": "user", "role": "assistant"}]"#;
        assert!(parse_without_repeated_keys(nested).is_err());
        assert!(parse_without_repeated_keys("{} x").is_err());
    }
}
