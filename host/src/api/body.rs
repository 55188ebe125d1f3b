//! Reading a JSON request body field by field, collecting every problem, so a
//! 400 lists them all instead of stopping at the first.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::problem::ApiError;
use crate::model::FieldError;

/// Longest accepted target, in bytes.
pub(super) const MAX_TARGET: usize = 256;

/// The request body, or a 413 (over `max_body`) or 400 (unreadable) problem.
pub(super) fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge(format!("the request body is over the server's limit ({})", rejection.body_text()))
        }
        _ => ApiError::field("", format!("the body could not be read: {}", rejection.body_text())),
    })
}

#[cfg(test)]
thread_local! {
    /// Every field name a parser asked a [`Body`] for, on this thread: the
    /// tests below compare them with the OpenAPI schemas of the bodies.
    static FIELDS_READ: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Notes that a parser reads `name` (in tests only).
fn reads(name: &'static str) {
    #[cfg(test)]
    FIELDS_READ.with(|read| read.borrow_mut().push(name));
    let _ = name;
}

/// A JSON object body being read; fields are taken out as they are read, so
/// whatever is left at the end is unknown.
pub(super) struct Body {
    fields: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Body {
    /// Parses `bytes` as a JSON object.
    pub(super) fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::Invalid {
            detail: format!("the body is not valid JSON: {e}"),
            errors: vec![FieldError::new("", format!("malformed JSON: {e}"))],
        })?;
        match value {
            Value::Object(fields) => Ok(Body { fields, errors: Vec::new() }),
            _ => Err(ApiError::field("", "the body must be a JSON object")),
        }
    }

    /// Records a problem with `field`.
    pub(super) fn reject(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A required, non-empty string.
    pub(super) fn text(&mut self, name: &'static str) -> Option<String> {
        reads(name);
        match self.fields.remove(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
            Some(Value::String(_)) => {
                self.reject(name, "must not be empty");
                None
            }
            Some(_) => {
                self.reject(name, "must be a string");
                None
            }
            None => {
                self.reject(name, "is required");
                None
            }
        }
    }

    /// A required target: a non-empty string of at most [`MAX_TARGET`] bytes
    /// without control characters.
    pub(super) fn target(&mut self) -> Option<String> {
        let target = self.text("target")?;
        if target.len() > MAX_TARGET {
            self.reject("target", format!("must be at most {MAX_TARGET} bytes"));
        } else if target.chars().any(char::is_control) {
            self.reject("target", "must not contain control characters");
        }
        Some(target)
    }

    /// An optional string of `1..=max` bytes; `null` counts as absent.
    pub(super) fn optional_text(&mut self, name: &'static str, max: usize) -> Option<String> {
        reads(name);
        match self.fields.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if (1..=max).contains(&s.len()) => Some(s),
            Some(_) => {
                self.reject(name, format!("must be a string of 1 to {max} bytes"));
                None
            }
        }
    }

    /// `params`: a JSON object, `{}` if absent.
    pub(super) fn params(&mut self) -> Value {
        reads("params");
        match self.fields.remove("params") {
            None => Value::Object(Default::default()),
            Some(p @ Value::Object(_)) => p,
            Some(_) => {
                self.reject("params", "must be a JSON object");
                Value::Null
            }
        }
    }

    /// Ends the reading: `Ok` if there was no problem and no unknown field.
    pub(super) fn finish(mut self, detail: &str) -> Result<(), ApiError> {
        for unknown in self.fields.keys() {
            self.errors.push(FieldError::new(unknown.as_str(), "is not an accepted field"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid { detail: detail.into(), errors: self.errors })
        }
    }
}

/// The documented request bodies (`NewOperation`, `NewSchedule` in the OpenAPI
/// document) and the parsers the handlers really use must accept the same fields.
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::FIELDS_READ;
    use crate::api::problem::ApiError;

    /// A parser, reduced to the field errors it reports (empty: accepted).
    type Parser = fn(&[u8]) -> Vec<(String, String)>;

    fn errors<T>(parsed: Result<T, ApiError>) -> Vec<(String, String)> {
        match parsed {
            Ok(_) => Vec::new(),
            Err(ApiError::Invalid { errors, .. }) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
            Err(other) => panic!("a parse error that is not a 400: {other:?}"),
        }
    }

    fn parsers() -> [(&'static str, Parser); 2] {
        [
            ("NewOperation", |b| errors(crate::api::operations::parse_create(b))),
            ("NewSchedule", |b| errors(crate::api::schedules::parse(b))),
        ]
    }

    /// A value the schema `property` accepts: its example if it has one, else
    /// the simplest of its type ("1" is a valid type, target, key, cron field
    /// and version requirement alike).
    fn example(property: &Value) -> Value {
        if let Some(example) = property.get("example").or_else(|| property["examples"].get(0)) {
            return example.clone();
        }
        let types: Vec<&str> = match &property["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if types.contains(&"object") {
            json!({})
        } else if types.contains(&"string") {
            json!("1")
        } else {
            panic!("no example for {property}")
        }
    }

    fn body(fields: &serde_json::Map<String, Value>, names: &BTreeSet<String>) -> Vec<u8> {
        let object: serde_json::Map<String, Value> =
            names.iter().map(|n| (n.clone(), example(&fields[n.as_str()]))).collect();
        serde_json::to_vec(&object).unwrap()
    }

    #[test]
    fn documented_bodies_parse_and_parsed_fields_are_documented() {
        let doc: Value = serde_json::from_str(crate::api::openapi_document()).unwrap();
        for (name, parse) in parsers() {
            let schema = &doc["components"]["schemas"][name];
            let properties = schema["properties"].as_object().unwrap_or_else(|| panic!("{name}: {schema}"));
            let all: BTreeSet<String> = properties.keys().cloned().collect();
            let required: BTreeSet<String> =
                schema["required"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
            assert!(required.is_subset(&all), "{name}");

            // What the schema describes, the parser accepts: the required fields alone, and all of them.
            FIELDS_READ.with(|read| read.borrow_mut().clear());
            assert_eq!(parse(&body(properties, &all)), [], "{name}: every documented field");
            let read: BTreeSet<String> = FIELDS_READ.with(|read| read.borrow().iter().map(|f| f.to_string()).collect());
            assert_eq!(parse(&body(properties, &required)), [], "{name}: the required fields alone");
            // And the other way: the parser reads no field the schema does not describe.
            assert_eq!(read, all, "{name}: the fields the parser reads, and the documented ones");
            // The parser requires exactly what the schema requires.
            let missing: BTreeSet<String> = parse(b"{}")
                .into_iter()
                .filter(|(_, message)| message == "is required")
                .map(|(field, _)| field)
                .collect();
            assert_eq!(missing, required, "{name}: required by the parser, and by the schema");
            // An undocumented field is refused, as the schema's additionalProperties says.
            assert_eq!(schema["additionalProperties"], json!(false), "{name}: {schema}");
            let mut extra: Value = serde_json::from_slice(&body(properties, &all)).unwrap();
            extra["not_a_field"] = json!(1);
            let refused = parse(&serde_json::to_vec(&extra).unwrap());
            assert_eq!(refused, [("not_a_field".to_owned(), "is not an accepted field".to_owned())], "{name}");
        }
    }
}
