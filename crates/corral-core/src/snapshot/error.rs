//! Why a snapshot command is refused.

use std::path::PathBuf;

/// A snapshot command refused before anything is changed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "{0:?} is not a valid snapshot name: use letters, digits, '-', '_' and '.', starting \
         with a letter or digit"
    )]
    Name(String),
    #[error(
        "instance {instance} has no snapshot {snapshot}; `corral snapshot list {instance}` shows \
         its snapshots"
    )]
    NotFound { instance: String, snapshot: String },
    #[error(
        "instance {instance} already has a snapshot {snapshot}; pick another name, or delete it \
         first with `corral snapshot delete {instance} {snapshot}`"
    )]
    Exists { instance: String, snapshot: String },
    #[error(
        "instance {name} is {status}; a snapshot is taken of a running or a stopped instance: \
         resume it (`corral resume {name}`) or stop it (`corral stop {name}`) first"
    )]
    NotRunningNorStopped { name: String, status: String },
    #[error(
        "cannot checkpoint running container {name}: CRIU does not work on this host: {reason}; \
         stop it first (`corral stop {name}`) for a filesystem-only snapshot"
    )]
    Criu { name: String, reason: String },
    #[error(
        "cannot restore snapshot {snapshot} of container {name}: it holds running processes, \
         and CRIU does not work on this host: {reason}; restore it where `criu check` passes"
    )]
    CriuRestore {
        name: String,
        snapshot: String,
        reason: String,
    },
    #[error(
        "instance {0} is running; stop it first (`corral stop {0}`), then restore the snapshot"
    )]
    RestoreRunning(String),
    #[error(
        "disks[{index}] of instance {instance} ({disk}) is writable and outside the instance's \
         directory, so a snapshot cannot keep its content; make it read-only (`corral config \
         edit {instance}`), or keep the disk in the instance's directory"
    )]
    SharedDisk {
        instance: String,
        index: usize,
        disk: String,
    },
    #[error("disks[{index}] of instance {instance} ({path}) is not a regular file, so it cannot be snapshotted")]
    NotAFile {
        instance: String,
        index: usize,
        path: PathBuf,
    },
    #[error(
        "the root filesystem of container {instance} ({rootfs}) is outside the instance's \
         directory, so a snapshot cannot keep it"
    )]
    RootfsOutside { instance: String, rootfs: PathBuf },
    #[error(
        "snapshot {snapshot} names disks[{index}], which its definition does not keep in the \
         instance's directory (the record was edited?); delete the snapshot"
    )]
    DiskOutside { snapshot: String, index: usize },
    #[error("snapshot record {path} cannot be read")]
    Record {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
