//! What can go wrong making a seed; every message names the `[cloud_init]` field or the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cloud_init.{field}: cannot read {path}")]
    Read {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cloud_init.{field}: {path} is larger than {limit} bytes; a seed file must be small")]
    TooLarge {
        field: &'static str,
        path: PathBuf,
        limit: u64,
    },
    #[error("cloud_init.{field} is not valid YAML; fix the document")]
    Yaml {
        field: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("cloud_init.{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("cloud_init.{field} does not pass `cloud-init schema`: {report}")]
    Schema { field: &'static str, report: String },
    #[error("cannot run `cloud-init schema` on cloud_init.{field}")]
    SchemaRun {
        field: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the CIDATA filesystem of {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "an ISO 9660 seed needs `genisoimage`; install it (apt-get install genisoimage) or use \
         cloud_init.seed_format = \"vfat\""
    )]
    IsoProgramMissing,
    #[error("genisoimage could not write the CIDATA image {path}: {report}")]
    IsoProgram { path: PathBuf, report: String },
    #[error(transparent)]
    WriteImage(#[from] corral_host::atomic::AtomicWriteError),
    #[error("cannot {action} {path} in the root filesystem {root}")]
    Rootfs {
        action: &'static str,
        root: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Shortcut(String),
}

impl SeedError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        SeedError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
