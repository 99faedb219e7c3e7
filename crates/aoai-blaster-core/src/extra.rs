//! [`ExtraFields`]: the fields of a reply object that aoai-blaster does not model, kept
//! verbatim as raw JSON text, and the small reading helpers the reply types use to parse
//! themselves in one pass; and [`kind_of`], a JSON value's kind in words for error messages.
//!
//! Azure's replies carry many fields nobody on the hot path reads (`prompt_filter_results`,
//! `content_filter_results`, token details, ...). Parsing them into `serde_json::Value` trees
//! costs an allocation per node, and freeing them as much again; keeping each as one raw JSON
//! text costs one allocation per field, keeps the server's exact text for a round trip, and
//! still lets a caller parse any of them on demand.

use std::fmt;

use serde::de::{DeserializeSeed, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Unmodelled fields of a reply object, in the order the server sent them, each as raw JSON.
///
/// ```
/// use aoai_blaster_core::chat::ChatCompletion;
/// let reply: ChatCompletion = serde_json::from_str(
///     r#"{"choices": [], "system_fingerprint": "fp_1", "prompt_filter_results": [{"prompt_index": 0}]}"#,
/// )?;
/// assert_eq!(reply.extra.get("system_fingerprint"), Some(serde_json::json!("fp_1")));
/// assert_eq!(reply.extra.raw("prompt_filter_results").map(|r| r.get()), Some(r#"[{"prompt_index": 0}]"#));
/// assert!(reply.extra.get("missing").is_none());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ExtraFields {
    fields: Vec<(String, Box<RawValue>)>,
}

impl ExtraFields {
    /// No fields.
    pub fn new() -> ExtraFields {
        ExtraFields::default()
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// True when `key` is present (even with a `null` value).
    pub fn contains_key(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// The raw JSON text of `key`.
    pub fn raw(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| &**value)
    }

    /// `key` parsed into a [`Value`].
    pub fn get(&self, key: &str) -> Option<Value> {
        serde_json::from_str(self.raw(key)?.get()).ok()
    }

    /// Sets `key` to `value` (replacing an earlier value).
    pub fn insert(&mut self, key: impl Into<String>, value: &Value) {
        // A `Value` always serialises.
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.insert_raw(key, raw);
        }
    }

    /// Sets `key` to an already-serialised JSON text (replacing an earlier value).
    pub fn insert_raw(&mut self, key: impl Into<String>, raw: Box<RawValue>) {
        let key = key.into();
        match self.fields.iter_mut().find(|(name, _)| *name == key) {
            Some((_, slot)) => *slot = raw,
            None => self.fields.push((key, raw)),
        }
    }

    /// Removes `key`, returning its raw JSON.
    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let position = self.fields.iter().position(|(name, _)| name == key)?;
        Some(self.fields.remove(position).1)
    }

    /// The fields in the server's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), &**value))
    }

    /// The fields of a JSON object map.
    pub fn from_map(map: Map<String, Value>) -> ExtraFields {
        let mut extra = ExtraFields::new();
        for (key, value) in map {
            extra.insert(key, &value);
        }
        extra
    }

    /// The fields as a JSON object map (each parsed).
    pub fn to_map(&self) -> Map<String, Value> {
        self.fields
            .iter()
            .filter_map(|(key, raw)| {
                let value = serde_json::from_str(raw.get()).ok()?;
                Some((key.clone(), value))
            })
            .collect()
    }
}

impl fmt::Debug for ExtraFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.fields.iter().map(|(key, raw)| (key, raw.get())))
            .finish()
    }
}

/// Equal when the same keys hold the same JSON values (whatever their order or spacing).
impl PartialEq for ExtraFields {
    fn eq(&self, other: &ExtraFields) -> bool {
        self.len() == other.len() && self.to_map() == other.to_map()
    }
}

impl Eq for ExtraFields {}

impl Serialize for ExtraFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len()))?;
        for (key, raw) in &self.fields {
            map.serialize_entry(key, raw)?;
        }
        map.end()
    }
}

/// A JSON value's kind in words, for error messages: `null`, `a boolean`, `a number`,
/// `a string`, `a list` or `an object`.
///
/// ```
/// use aoai_blaster_core::extra::kind_of;
/// assert_eq!(kind_of(&serde_json::json!([1])), "a list");
/// assert_eq!(format!("expected a JSON object, got {}", kind_of(&serde_json::json!(7))), "expected a JSON object, got a number");
/// ```
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A field name read by [`FieldName`]: one of the names the type models (its position in the
/// list), or any other.
pub(crate) enum Field {
    Known(usize),
    Other(String),
}

/// Reads an object key without allocating unless it is not one of `names`.
pub(crate) struct FieldName(pub(crate) &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Field, E> {
        Ok(match self.0.iter().position(|known| *known == name) {
            Some(index) => Field::Known(index),
            None => Field::Other(name.to_owned()),
        })
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Field, E> {
        Ok(match self.0.iter().position(|known| *known == name) {
            Some(index) => Field::Known(index),
            None => Field::Other(name),
        })
    }
}

/// Implements `Deserialize` for a reply struct in one pass over its JSON object: the listed
/// fields by their own readers, every other key into the struct's `extra` ([`ExtraFields`]).
/// `required` fields missing from the object are an error, as serde's derive would report.
macro_rules! deserialize_with_extra {
    (
        $ty:ident, $expecting:literal, init: $init:expr,
        required: [$($required:literal),*],
        fields: { $($index:literal $name:literal => |$target:ident, $map:ident| $read:expr),* $(,)? }
    ) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                struct ObjectVisitor;
                impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        const NAMES: &[&str] = &[$($name),*];
                        let mut value: $ty = $init;
                        let mut seen = [false; NAMES.len()];
                        while let Some(field) =
                            map.next_key_seed($crate::extra::FieldName(NAMES))?
                        {
                            match field {
                                $crate::extra::Field::Other(key) => {
                                    let raw: Box<serde_json::value::RawValue> = map.next_value()?;
                                    value.extra.insert_raw(key, raw);
                                }
                                $($crate::extra::Field::Known($index) => {
                                    seen[$index] = true;
                                    let $target = &mut value;
                                    let $map = &mut map;
                                    $read;
                                })*
                                $crate::extra::Field::Known(_) => {
                                    let _: serde::de::IgnoredAny = map.next_value()?;
                                }
                            }
                        }
                        $(
                            let position = NAMES.iter().position(|n| *n == $required);
                            if position.is_some_and(|p| !seen[p]) {
                                return Err(<A::Error as serde::de::Error>::missing_field($required));
                            }
                        )*
                        let _ = seen;
                        Ok(value)
                    }
                }
                deserializer.deserialize_map(ObjectVisitor)
            }
        }
    };
}

pub(crate) use deserialize_with_extra;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_server_order_and_text_and_replaces_on_insert() {
        let mut extra = ExtraFields::new();
        extra.insert("b", &json!({"x": 1}));
        extra.insert("a", &json!(null));
        extra.insert_raw("b", RawValue::from_string("[1, 2]".into()).unwrap());
        let keys: Vec<&str> = extra.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(extra.raw("b").unwrap().get(), "[1, 2]");
        assert!(extra.contains_key("a"));
        assert_eq!(extra.get("a"), Some(Value::Null));
        assert_eq!(extra.remove("a").unwrap().get(), "null");
        assert_eq!(extra.len(), 1);
        assert_eq!(serde_json::to_string(&extra).unwrap(), r#"{"b":[1, 2]}"#);
    }

    #[test]
    fn equality_ignores_order_and_spacing() {
        let mut one = ExtraFields::new();
        one.insert_raw("a", RawValue::from_string("{ \"k\" : 1 }".into()).unwrap());
        one.insert("b", &json!(2));
        let two =
            ExtraFields::from_map(json!({"b": 2, "a": {"k": 1}}).as_object().cloned().unwrap());
        assert_eq!(one, two);
        let mut three = two.clone();
        three.insert("b", &json!(3));
        assert_ne!(one, three);
        assert_eq!(one.to_map(), two.to_map());
    }

    #[test]
    fn debug_shows_the_raw_text() {
        let mut extra = ExtraFields::new();
        extra.insert("system_fingerprint", &json!("fp_1"));
        assert_eq!(
            format!("{extra:?}"),
            r#"{"system_fingerprint": "\"fp_1\""}"#
        );
    }
}
