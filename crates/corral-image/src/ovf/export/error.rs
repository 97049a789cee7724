//! What can go wrong writing an OVA: every refusal names the file and what to do.

use std::path::PathBuf;

use corral_error::PathIoError;

#[derive(Debug, thiserror::Error)]
pub enum OvfExportError {
    #[error("{target} exists; give a new name or remove it first")]
    Exists { target: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("cannot read disk {index} ({path})")]
    Disk {
        index: usize,
        path: PathBuf,
        #[source]
        source: Box<corral_disk::DiskError>,
    },
    #[error("cannot write disk {index} ({path}) into {target}")]
    Convert {
        index: usize,
        path: PathBuf,
        target: PathBuf,
        #[source]
        source: Box<corral_disk::DiskError>,
    },
}
