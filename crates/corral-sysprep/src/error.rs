//! The one error type of the crate.

use std::path::PathBuf;

use corral_disk::partition::PartitionError;
use corral_disk::DiskError;

use crate::Operation;

/// Why an identity reset failed. Unless it says otherwise, nothing was changed: a directory
/// target may have had the edits before the failing one applied (each is reported by the
/// caller's report of a dry run), a disk target is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SysprepError {
    #[error("cannot open the root directory {dir}")]
    OpenRoot {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir} does not look like a root filesystem (it has no etc directory); give the \
         container's root directory"
    )]
    NotARoot { dir: PathBuf },
    #[error("cannot {action} {path} in the guest's filesystem")]
    Guest {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} in the guest's filesystem is {size} bytes, more than the {limit} corral reads"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error(
        "{path} in the guest's filesystem holds more than {limit} entries; remove them inside \
         the guest"
    )]
    TooManyEntries { path: PathBuf, limit: usize },
    #[error(
        "{path} in the guest's filesystem is nested more than {limit} directories deep; remove \
         it inside the guest"
    )]
    TooDeep { path: PathBuf, limit: usize },
    #[error(
        "`{name}` is not a valid hostname ({reason}); use letters, digits and hyphens in dot-\
         separated labels of at most 63 characters"
    )]
    InvalidHostname { name: String, reason: &'static str },
    #[error(
        "fs-uuids changes the UUID of a disk's filesystem; a container's root directory has \
         none: leave fs-uuids out for directories"
    )]
    FsUuidsOnDirectory,
    #[error("cannot get random bytes from the kernel for {operation}")]
    Random {
        operation: Operation,
        #[source]
        source: getrandom::Error,
    },
    #[error("cannot make a new machine id")]
    MachineId(#[source] corral_host::machine_id::MachineIdError),
    #[error("the disk is open read-only; open it writable to reset its identity")]
    ReadOnlyDisk,
    #[error("cannot {action} the disk")]
    Disk {
        action: &'static str,
        #[source]
        source: DiskError,
    },
    #[error(transparent)]
    Partitions(#[from] PartitionError),
    #[error(
        "the disk has no ext2/3/4 filesystem with /etc that corral can edit offline (found: \
         {found}); let the guest reset itself at first boot instead (cloud-init, or `corral \
         guest sysprep` inside it before templating)"
    )]
    NoEditableRoot { found: String },
    #[error("cannot read the ext filesystem on {place}")]
    Filesystem {
        place: String,
        #[source]
        source: ext4_view::Ext4Error,
    },
    #[error(
        "the filesystem on {place} was not shut down cleanly (its journal needs recovery); \
         boot the guest and shut it down cleanly, or run `e2fsck` on it, then try again"
    )]
    NeedsRecovery { place: String },
    #[error(
        "the filesystem on {place} has errors, so corral will not edit it (e2fsck -fn: \
         {report}); repair it with `e2fsck -f` first"
    )]
    NotClean { place: String, report: String },
    #[error(
        "corral's edit left the filesystem on {place} inconsistent (e2fsck -fn: {report}); the \
         disk is unchanged"
    )]
    EditInconsistent { place: String, report: String },
    #[error(
        "{operation}: {path} on the disk was not {expected} after the edit; the disk is unchanged"
    )]
    EditNotApplied {
        operation: Operation,
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "the guest's filesystem has a file named {path:?}, which debugfs cannot name (a newline \
         or carriage return, or a path longer than {limit} bytes); remove it inside the guest, \
         or let the guest reset itself"
    )]
    Unnameable { path: PathBuf, limit: usize },
    #[error(
        "{path} on the disk has {links} hard links; corral rewrites a file on a disk as a new \
         inode, which would split them; remove the extra links inside the guest"
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error(
        "{path} on the disk has an extended attribute named {name:?}, which corral cannot copy \
         to the rewritten file"
    )]
    UncopyableAttribute { path: PathBuf, name: String },
    #[error("cannot run {program}; install {package} (corral edits disks offline with it)")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed: {output}")]
    ProgramFailed {
        program: &'static str,
        output: String,
    },
    #[error("cannot stage the filesystem for editing in {dir}")]
    Scratch {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "writing the edited filesystem back to the disk failed after {written} bytes; the disk \
         may be inconsistent now: restore it from its source"
    )]
    WriteBack {
        written: u64,
        #[source]
        source: Box<SysprepError>,
    },
}

/// The crate's result type.
pub type Result<T, E = SysprepError> = std::result::Result<T, E>;

impl SysprepError {
    /// An I/O error on a guest path.
    pub(crate) fn guest(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| SysprepError::Guest {
            action,
            path,
            source,
        }
    }
}
