//! `past-wit`: a test-only plugin built straight with wit-bindgen against
//! `opal:plugin@0.1.0`, the package as it was before `exec` was added in
//! 0.1.1. The host must still load and run it: a semver-compatible, older
//! plugin keeps working after a host upgrade.

// Only a component makes sense of this crate; natively it is empty.
#![cfg(target_family = "wasm")]
// wit-bindgen's generated glue is unsafe by nature; the SDK allows it the same way.
#![allow(unsafe_code, missing_docs, unreachable_pub)]

wit_bindgen::generate!({
    inline: r#"
package opal:plugin@0.1.0;

interface types {
    record field-error { field: string, message: string }
    record plugin-info {
        name: string, version: string, title: string, description: string, params-schema: string,
        default-timeout-ms: u64, retry-safe: bool, exclusivity-group: option<string>,
    }
    record outcome { message: string, details: string }
    variant run-error { invalid-params(list<field-error>), failed(string), cancelled }
    enum level { debug, info, warn, error }
}

interface progress {
    use types.{level};
    report: func(percent: u8, message: string);
    set-details: func(json: string);
    phase: func(name: string);
    log: func(level: level, message: string);
    cancelled: func() -> bool;
}

world operation {
    import progress;
    use types.{plugin-info, field-error, outcome, run-error};
    export describe: func() -> plugin-info;
    export validate: func(params: string) -> result<_, list<field-error>>;
    export run: func(target: string, params: string) -> result<outcome, run-error>;
}
"#,
    world: "operation",
});

struct Past;

impl Guest for Past {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "past-wit".into(),
            version: "0.1.0".into(),
            title: "Past WIT (test only)".into(),
            description: String::new(),
            params_schema: "{}".into(),
            default_timeout_ms: 1000,
            retry_safe: false,
            exclusivity_group: None,
        }
    }

    fn validate(_params: String) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    fn run(_target: String, _params: String) -> Result<Outcome, RunError> {
        opal::plugin::progress::report(50, "from the past");
        Ok(Outcome { message: "from the past".into(), details: String::new() })
    }
}

export!(Past);
