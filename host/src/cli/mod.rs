//! Subcommands of the `opal` binary that are more than a few lines, one file
//! each. They parse their flags, call the library and print what a person
//! needs next; `main.rs` only wires them into the command tree. The client
//! subcommands talk to a server through `remote` (HTTP) and `follow` (the
//! WebSocket), and print through `output`.

pub(crate) mod catalog;
pub(crate) mod follow;
pub(crate) mod new;
pub(crate) mod ops;
pub(crate) mod output;
pub(crate) mod remote;
pub(crate) mod run;
pub(crate) mod token;
