//! Errors of the instance layer.

use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] corral_control::ControlError),
    #[error("instance {0} is already running")]
    AlreadyRunning(String),
    #[error("instance {0} is not running; start it with `corral start {0}`")]
    NotRunning(String),
    #[error("instance {0} is paused; resume it with `corral resume {0}` first")]
    Paused(String),
    #[error("instance {0} is not paused")]
    NotPaused(String),
    #[error("instance {0} is running; stop it first, or delete it with --force")]
    Running(String),
    #[error("instance {name} failed to start: {detail}")]
    StartFailed { name: String, detail: String },
    #[error("instance {name}'s supervisor refused `{request}`: {message}")]
    Refused {
        name: String,
        request: String,
        message: String,
    },
    #[error("{what} {path} does not exist")]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Volume(Box<crate::volume::VolumeError>),
    #[error(transparent)]
    Write(#[from] corral_host::atomic::AtomicWriteError),
}

impl CoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
