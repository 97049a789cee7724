//! Error types every corral crate shares, kept in a crate of their own so that the lowest crates
//! (corral-host, corral-disk) can use them without depending on each other.
//!
//! [`PathIoError`] is the one shape of "an operation on a file failed": each crate's error enum
//! holds it as `#[error(transparent)] Io(#[from] PathIoError)` instead of repeating the variant.

use std::io;
use std::path::{Path, PathBuf};

/// An operation on a file or directory failed: "cannot {action} {path}". The OS error is the
/// source, not part of the message, so a printed error chain names it once.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub struct PathIoError {
    /// What was attempted, as a verb phrase: "read", "create the directory", ...
    pub action: &'static str,
    /// The file or directory it was attempted on.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

impl PathIoError {
    /// The error for `action` on `path` failing with `source`.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PathIoError {
            action,
            path: path.into(),
            source,
        }
    }

    /// A closure for `map_err` that names `action` and `path`:
    /// `fs::read(&p).map_err(PathIoError::at("read", &p))?`.
    pub fn at<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| PathIoError::new(action, path, source)
    }

    /// The kind of the OS error, for callers that treat e.g. `NotFound` as an answer.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn message_names_action_and_path_and_leaves_the_cause_to_source() {
        let err = PathIoError::new(
            "read",
            "/no/such/file",
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(err.to_string(), "cannot read /no/such/file");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let source = err.source().expect("the OS error is the source");
        assert!(!err.to_string().contains(&source.to_string()));
    }

    #[test]
    fn at_wraps_a_real_failure_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = std::fs::read(&missing)
            .map_err(PathIoError::at("read", &missing))
            .unwrap_err();
        assert_eq!(err.path, missing);
        assert_eq!(err.action, "read");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
