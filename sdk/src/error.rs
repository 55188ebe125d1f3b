//! The error a run returns, and the field errors validation returns.

use std::fmt;

/// A problem with one field of the params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as a JSON Pointer without the leading `/` (`steps`).
    pub field: String,
    /// What is wrong, for the operator.
    pub message: String,
}

impl FieldError {
    /// A field error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Why a run did not succeed.
///
/// Any `std::error::Error` converts into [`Error::Failed`] with `?`, so plugin
/// code can propagate I/O and parse errors without ceremony.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The params were wrong in a way only the run could find out.
    InvalidParams(Vec<FieldError>),
    /// The operation failed, with a message for the operator.
    Failed(String),
    /// The plugin noticed a cancel request and stopped.
    Cancelled,
}

impl Error {
    /// A failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// Invalid params, found out while running: one field and what is wrong with it.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidParams(vec![FieldError::new(field, message)])
    }
}

/// `Result<T, opal_sdk::Error>`, so `run` can say `-> Result<Outcome>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidParams(errors) => {
                write!(f, "invalid params:")?;
                for e in errors {
                    write!(f, " {}: {};", e.field, e.message)?;
                }
                Ok(())
            }
            Error::Failed(message) => f.write_str(message),
            Error::Cancelled => f.write_str("cancelled"),
        }
    }
}

// `Error` deliberately does not implement `std::error::Error`: that keeps this
// blanket conversion coherent, in the way `anyhow::Error` does it.
impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::Failed(error.to_string())
    }
}
