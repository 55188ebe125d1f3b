//! A plugin's params schema: the published document and its compiled validator.

use serde_json::Value;

use crate::model::FieldError;

/// The JSON Schema a plugin's params must match.
pub struct ParamsSchema {
    document: Value,
    validator: jsonschema::Validator,
}

impl ParamsSchema {
    /// Parses and compiles the schema text from `describe()`.
    pub fn compile(text: &str) -> Result<Self, String> {
        let document: Value = serde_json::from_str(text).map_err(|e| format!("params schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&document).map_err(|e| format!("params schema is invalid: {e}"))?;
        Ok(ParamsSchema { document, validator })
    }

    /// The schema as published.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// Every way `params` fails the schema, with fields named under `prefix`
    /// (`params/steps`). Empty if it matches.
    pub fn check(&self, params: &Value, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for error in self.validator.iter_errors(params) {
            let at = join(prefix, error.instance_path().as_str());
            match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
                    errors.push(FieldError::new(join(&at, &format!("/{name}")), "is required"));
                }
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        errors.push(FieldError::new(join(&at, &format!("/{name}")), "is not an accepted field"));
                    }
                }
                _ => errors.push(FieldError::new(at, error.to_string())),
            }
        }
        errors
    }
}

/// `prefix` + a JSON Pointer, without the leading `/`.
fn join(prefix: &str, pointer: &str) -> String {
    let pointer = pointer.trim_start_matches('/');
    match (prefix.is_empty(), pointer.is_empty()) {
        (true, _) => pointer.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}/{pointer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_fields() {
        let schema = ParamsSchema::compile(
            r#"{"type":"object","properties":{"steps":{"type":"integer","minimum":1}},"required":["steps"],"additionalProperties":false}"#,
        )
        .unwrap();
        assert!(schema.check(&serde_json::json!({"steps": 3}), "params").is_empty());
        let fields = |v| schema.check(&v, "params").into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(serde_json::json!({})), ["params/steps"]);
        assert_eq!(fields(serde_json::json!({"steps": 0})), ["params/steps"]);
        assert_eq!(fields(serde_json::json!({"steps": "x"})), ["params/steps"]);
        assert_eq!(fields(serde_json::json!({"steps": 1, "bogus": 1})), ["params/bogus"]);
    }
}
