//! `greeter` 2.0.0, a test-only plugin (the source is shared: `../greeter.rs`).

/// This build's version.
const VERSION: &str = "2.0.0";

include!("../../greeter.rs");
