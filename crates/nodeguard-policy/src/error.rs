//! The one error type of this crate.

use std::io;

/// Why a policy was refused. A policy with any error is refused whole, never half-applied.
///
/// Every variant names the policy's origin (its file name); those found in the text also say
/// where (`line:column`, 1-based) and, past YAML syntax, which field (`trusted_binaries[0].path`).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{origin}: cannot read policy: {source}")]
    Read {
        origin: String,
        #[source]
        source: io::Error,
    },
    /// The text is not well-formed YAML.
    #[error("{origin}:{line}:{column}: YAML syntax error: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A field is unknown, has the wrong type, or holds a value the policy cannot use (a bad
    /// digest, glob, capability, finding kind or severity).
    #[error("{origin}:{line}:{column}: {field}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        column: usize,
        /// Path of the offending field, e.g. `trusted_binaries[0].sha256[1]`.
        field: String,
        message: String,
    },
    /// A problem with the document as a whole that has no position (e.g. several documents).
    #[error("{origin}: {message}")]
    Document { origin: String, message: String },
}

impl PolicyError {
    /// The `(line, column)` of the problem, 1-based, when it has one.
    pub fn location(&self) -> Option<(usize, usize)> {
        match self {
            PolicyError::Syntax { line, column, .. }
            | PolicyError::Invalid { line, column, .. } => Some((*line, *column)),
            PolicyError::Read { .. } | PolicyError::Document { .. } => None,
        }
    }

    /// The path of the offending field, when the problem is in one.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}
