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
    pub(super) fn text(&mut self, name: &str) -> Option<String> {
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
    pub(super) fn optional_text(&mut self, name: &str, max: usize) -> Option<String> {
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
