//! Subcommands of the `opal` binary that are more than a few lines, one file
//! each. They parse their flags, call the library and print what a person
//! needs next; `main.rs` only wires them into the command tree.

pub(crate) mod new;
pub(crate) mod token;
