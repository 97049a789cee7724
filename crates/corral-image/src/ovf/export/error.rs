//! What can go wrong writing an OVA: every refusal names the file and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OvfExportError {
    #[error("{target} exists; give a new name or remove it first")]
    Exists { target: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
