//! The operator's params defaults (`[types.X.params]`), merged under a
//! request's params at admission.
//!
//! The merge is shallow on purpose: a top-level field the request sets (even
//! to `null`) replaces the default whole, so a request never gets half of a
//! default object or list that it did not ask for. The merged params are what
//! is checked, stored and run, so the operation's record says what ran and a
//! re-queued run after a restart runs the same, whatever the config says by
//! then. A check that fails on a field the request left to the defaults says
//! so, because the fix is in the config, not in the request.

use serde_json::{Map, Value};

use crate::model::FieldError;

/// `params` with every default it does not set. Anything but an object is
/// returned as it is, for the schema check to refuse.
pub(super) fn merge(defaults: &Map<String, Value>, params: Value) -> Value {
    match params {
        Value::Object(mut given) if !defaults.is_empty() => {
            for (key, value) in defaults {
                given.entry(key.clone()).or_insert_with(|| value.clone());
            }
            Value::Object(given)
        }
        other => other,
    }
}

/// Points each error about a field that came from the defaults (not from the
/// request's own `params`) at the config section it came from.
pub(super) fn blame(errors: &mut [FieldError], op_type: &str, defaults: &Map<String, Value>, requested: &Value) {
    for error in errors {
        let Some(key) = error.field.strip_prefix("params/").map(|rest| rest.split('/').next().unwrap_or(rest)) else {
            continue;
        };
        if defaults.contains_key(key) && requested.get(key).is_none() {
            error.message =
                format!("{} (the server's default, from [types.{op_type}.params] in its config)", error.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn defaults(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_request_wins_whole_and_the_defaults_fill_the_rest() {
        let d = defaults(json!({"command": "/usr/bin/sudo", "args": ["-n", "restart"], "nested": {"a": 1}}));
        assert_eq!(
            merge(&d, json!({"unit": "nginx", "args": ["stop"], "nested": {"b": 2}})),
            json!({"unit": "nginx", "command": "/usr/bin/sudo", "args": ["stop"], "nested": {"b": 2}})
        );
        assert_eq!(merge(&d, json!({"command": null}))["command"], Value::Null, "null is a value the request set");
        assert_eq!(merge(&Map::new(), json!({"x": 1})), json!({"x": 1}));
        assert_eq!(merge(&d, json!([1])), json!([1]), "not an object: left for the schema check");
        let once = merge(&d, json!({"unit": "a"}));
        assert_eq!(merge(&d, once.clone()), once, "merging twice changes nothing");
    }

    #[test]
    fn errors_on_defaulted_fields_name_the_config() {
        let d = defaults(json!({"command": "sudo", "args": ["x"]}));
        let mut errors = vec![
            FieldError::new("params/command", "must be absolute"),
            FieldError::new("params/args/0", "too short"),
            FieldError::new("params/unit", "is required"),
            FieldError::new("params", "whole"),
        ];
        blame(&mut errors, "service-restart", &d, &json!({"args": ["y"]}));
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "must be absolute (the server's default, from [types.service-restart.params] in its config)",
                "too short",
                "is required",
                "whole"
            ]
        );
    }
}
