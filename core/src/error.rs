//! One error type for the library layers.
//!
//! Variants are grouped by who is at fault, so the CLI can say what to do next:
//! the input data ([`Error::BadInput`]), the configuration ([`Error::BadConfig`]),
//! the machine ([`Error::Io`] and the wrapped Arrow/Parquet errors), or quern itself
//! ([`Error::Bug`]). Messages name the file, line or key and end with what to do.

use std::path::{Path, PathBuf};

/// Result with quern's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in an input something went wrong: a file and, where known, a line or byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub byte_offset: Option<u64>,
}

impl Place {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Place {
            path: path.into(),
            line: None,
            byte_offset: None,
        }
    }
    pub fn with_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.byte_offset = Some(offset);
        self
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(off) = self.byte_offset {
            write!(f, " (byte {off})")?;
        }
        Ok(())
    }
}

/// quern's library error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the input's fault -------------------------------------------------------------
    /// A record or file that cannot be used as it is.
    #[error("bad input at {place}: {message}")]
    BadInput { place: Place, message: String },

    // --- the configuration's fault -----------------------------------------------------
    /// A configuration key with a value that is not allowed, or an unknown key.
    #[error("bad config `{key}`: {message}")]
    BadConfig { key: String, message: String },

    /// A command-line or API usage that cannot work (for example an output directory that
    /// holds a different build).
    #[error("{0}")]
    Usage(String),

    // --- the machine's fault -----------------------------------------------------------
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    // --- quern's fault -----------------------------------------------------------------
    /// An internal invariant was broken. Please report it.
    #[error("internal error (a bug in quern, please report it): {0}")]
    Bug(String),

    /// Another error with a sentence of context in front of it.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn bad_input(place: Place, message: impl Into<String>) -> Self {
        Error::BadInput {
            place,
            message: message.into(),
        }
    }
    pub fn bad_config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadConfig {
            key: key.into(),
            message: message.into(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn bug(message: impl Into<String>) -> Self {
        Error::Bug(message.into())
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    /// The innermost error, below any [`Error::Context`] layers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }
}

/// Adds a sentence of context to errors, like `anyhow::Context`, keeping the typed cause.
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}

/// Extension to turn `std::io::Result` into [`Error::Io`] naming the path.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_place_and_key() {
        let e = Error::bad_input(Place::file("a.jsonl").with_line(7), "expected a string");
        assert_eq!(e.to_string(), "bad input at a.jsonl:7: expected a string");
        let e = Error::bad_config("stages[1].min_words", "must be >= 0");
        assert_eq!(
            e.to_string(),
            "bad config `stages[1].min_words`: must be >= 0"
        );
        let e: Result<()> = Err(Error::bug("x")).context("writing shard");
        let e = e.unwrap_err();
        assert_eq!(e.to_string(), "writing shard");
        assert!(matches!(e.root(), Error::Bug(_)));
    }
}
