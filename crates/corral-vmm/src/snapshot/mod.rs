//! Snapshots: a paused VM saved into a directory (`state` + `memory`) and restored by a new
//! VMM process (`corral vmm run --restore DIR`).
//!
//! `state` ([`file`]) holds the VM's configuration (so a restore needs no other flags), the
//! VM-wide KVM state, every vCPU's KVM state and the devices' state; `memory` ([`memory`]) is
//! guest RAM, sparse. The main thread saves while the vCPUs are paused and restores before
//! they first run; the order of the KVM calls is in [`crate::vstate::vcpu_state`].
//!
//! A diff snapshot ([`SnapshotKind::Diff`], from a VM that tracks dirty pages) holds only the
//! pages written since the snapshot before it (its base); [`merge`] lays it over that base and
//! makes a full snapshot, the only kind that restores.

pub mod file;
pub mod memory;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use corral_error::PathIoError;
use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::devices::{DeviceError, DeviceStates};
use crate::vstate::vcpu::VcpuError;
use crate::vstate::vcpu_state::{VcpuState, VcpuStateError};
use crate::vstate::vm::{VmError, VmState};
use file::StateFileError;
use memory::{MemoryFileError, Pages};

pub const STATE_FILE: &str = "state";
pub const MEMORY_FILE: &str = "memory";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{dir} is not empty; snapshots go into a new or empty directory")]
    NotEmpty { dir: PathBuf },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path} is {size} bytes, more than a VM state file can be; is it one?")]
    TooLarge { path: PathBuf, size: u64 },
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("cannot read the VM state in {path}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot pick a snapshot id")]
    Id(#[source] getrandom::Error),
    #[error("cannot encode the VM state")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    #[error(transparent)]
    VcpuState(#[from] VcpuStateError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error("no guest is running (it is being restarted); retry")]
    NoGuest,
    #[error(
        "{dir} is a diff snapshot: it holds only the memory pages changed since snapshot \
         {base:016x}; merge it onto that one first (`corral vmm snapshot merge BASE {dir} --to \
         DIR`) and restore the result"
    )]
    BareDiff { dir: PathBuf, base: u64 },
    #[error(
        "this VM does not track dirty pages, so it cannot take a diff snapshot; run it with \
         --track-dirty-pages (track_dirty_pages = true in its config), or take a full snapshot"
    )]
    NotTracking,
    #[error(
        "a diff snapshot holds the changes since the last snapshot of this boot of the guest, \
         and there is none yet; take a full snapshot first"
    )]
    NoBase,
    #[error("{dir} is a diff snapshot; merge onto a full snapshot (merge its own base first)")]
    BaseIsDiff { dir: PathBuf },
    #[error("{dir} is a full snapshot, not a diff; it restores as it is")]
    NotADiff { dir: PathBuf },
    #[error(
        "{diff} holds the changes since snapshot {wanted:016x}, but {base} is snapshot \
         {found:016x}; merge it onto its own base"
    )]
    WrongBase {
        diff: PathBuf,
        base: PathBuf,
        wanted: u64,
        found: u64,
    },
    #[error(
        "{base} is a VM with {base_size} of memory, {diff} one with {diff_size}; they cannot merge"
    )]
    SizeMismatch {
        base: PathBuf,
        diff: PathBuf,
        base_size: crate::config::MemorySize,
        diff_size: crate::config::MemorySize,
    },
    #[error("the state in {path} has {found} vCPUs for a {vcpus}-vCPU configuration")]
    VcpuCount {
        path: PathBuf,
        found: usize,
        vcpus: u8,
    },
}

fn io(action: &'static str, path: &Path) -> impl Fn(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io(PathIoError::new(action, path.clone(), source))
}

/// Whether a snapshot's `memory` holds all of guest memory or only what changed since another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// All of guest memory (zero pages as holes).
    Full,
    /// Only the pages written since snapshot `base` (its [`Snapshot::id`]) was taken or
    /// restored; holes are unchanged pages.
    Diff { base: u64 },
}

/// Everything `state` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Names this snapshot, so that a diff can name its base. A merged snapshot keeps its diff's.
    pub id: u64,
    pub kind: SnapshotKind,
    pub config: VmConfig,
    pub vm: VmState,
    pub vcpus: Vec<VcpuState>,
    pub devices: DeviceStates,
}

/// A `snapshot` request on its way from the control socket to the main thread.
pub struct SnapshotRequest {
    pub dir: PathBuf,
    /// Keep the vCPUs paused afterwards (they resume otherwise, unless they were paused before).
    pub leave_paused: bool,
    /// Save only the pages written since the last snapshot (the VM must track dirty pages).
    pub diff: bool,
    pub reply: mpsc::Sender<Result<(), SnapshotError>>,
}

/// Creates `dir` if missing; refuses one that has anything in it.
pub fn prepare_dir(dir: &Path) -> Result<(), SnapshotError> {
    corral_host::atomic::create_private_dir_all(dir).map_err(io("create", dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(io("read", dir))?;
    if entries.next().is_some() {
        return Err(SnapshotError::NotEmpty {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// A new snapshot id: random, so that a diff is never merged onto another VM's snapshot.
pub fn new_id() -> Result<u64, SnapshotError> {
    getrandom::u64().map_err(SnapshotError::Id)
}

/// Writes `pages` of guest memory then `state` into `dir` (prepared by [`prepare_dir`]): a
/// `state` file is only there once the snapshot is complete.
pub fn write(
    dir: &Path,
    snapshot: &Snapshot,
    guest_memory: &crate::vstate::memory::GuestMemoryMmap,
    pages: Pages<'_>,
) -> Result<(), SnapshotError> {
    let written = memory::save(guest_memory, &dir.join(MEMORY_FILE), pages)?;
    write_state(dir, snapshot)?;
    tracing::info!(
        "{:?} snapshot saved in {}: {written} bytes of guest memory written",
        snapshot.kind,
        dir.display()
    );
    Ok(())
}

fn write_state(dir: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let payload = serde_json::to_vec(snapshot).map_err(SnapshotError::Encode)?;
    corral_host::atomic::write_file(
        &dir.join(STATE_FILE),
        &file::encode(&payload),
        corral_host::atomic::PRIVATE_FILE_MODE,
    )?;
    Ok(())
}

/// Reads and checks the `state` of the snapshot in `dir`, full or diff.
pub fn read_state(dir: &Path) -> Result<Snapshot, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let file = File::open(&path).map_err(io("open", &path))?;
    let size = file.metadata().map_err(io("read", &path))?.len();
    if size > file::MAX_FILE {
        return Err(SnapshotError::TooLarge { path, size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(file::MAX_FILE)
        .read_to_end(&mut bytes)
        .map_err(io("read", &path))?;
    let payload = file::decode(&path, &bytes)?;
    let snapshot: Snapshot =
        serde_json::from_slice(payload).map_err(|source| SnapshotError::Decode {
            path: path.clone(),
            source,
        })?;
    if snapshot.vcpus.len() != usize::from(snapshot.config.vcpus) {
        return Err(SnapshotError::VcpuCount {
            path,
            found: snapshot.vcpus.len(),
            vcpus: snapshot.config.vcpus,
        });
    }
    Ok(snapshot)
}

fn open_memory(dir: &Path) -> Result<(File, PathBuf), SnapshotError> {
    let path = dir.join(MEMORY_FILE);
    let file = File::open(&path).map_err(io("open", &path))?;
    Ok((file, path))
}

/// Lays the diff snapshot in `diff` over the full snapshot `base` it was taken against, into
/// `to` (new or empty): a full snapshot with the diff's state, restorable like any other.
/// `base` and `diff` are only read; `to` gets its `state` last, once its memory is complete.
pub fn merge(base: &Path, diff: &Path, to: &Path) -> Result<(), SnapshotError> {
    let base_state = read_state(base)?;
    let mut diff_state = read_state(diff)?;
    if let SnapshotKind::Diff { .. } = base_state.kind {
        return Err(SnapshotError::BaseIsDiff {
            dir: base.to_path_buf(),
        });
    }
    let SnapshotKind::Diff { base: wanted } = diff_state.kind else {
        return Err(SnapshotError::NotADiff {
            dir: diff.to_path_buf(),
        });
    };
    if base_state.config.memory != diff_state.config.memory {
        return Err(SnapshotError::SizeMismatch {
            base: base.to_path_buf(),
            diff: diff.to_path_buf(),
            base_size: base_state.config.memory,
            diff_size: diff_state.config.memory,
        });
    }
    if wanted != base_state.id {
        return Err(SnapshotError::WrongBase {
            diff: diff.to_path_buf(),
            base: base.to_path_buf(),
            wanted,
            found: base_state.id,
        });
    }
    let (base_memory, base_path) = open_memory(base)?;
    let (diff_memory, diff_path) = open_memory(diff)?;
    prepare_dir(to)?;
    memory::merge(
        (&base_memory, &base_path),
        (&diff_memory, &diff_path),
        &to.join(MEMORY_FILE),
        diff_state.config.memory.0,
    )?;
    diff_state.kind = SnapshotKind::Full;
    write_state(to, &diff_state)?;
    tracing::info!(
        "merged {} onto {} into {}",
        diff.display(),
        base.display(),
        to.display()
    );
    Ok(())
}

/// A snapshot opened for restoring: its state checked and decoded, its memory file open (so a
/// jailed or confined VMM reads it without opening anything later).
pub struct SavedVm {
    pub snapshot: Snapshot,
    pub memory: File,
    pub memory_path: PathBuf,
    /// The memory file is this process's alone (a migration's memfd): the guest's RAM maps it
    /// rather than copying it, so a restore takes no time per byte. A snapshot's file on disk
    /// is copied: whoever can write it must not reach a running guest's memory.
    pub map_memory: bool,
}

impl SavedVm {
    /// Opens the full snapshot in `dir`; a diff is refused (it restores only once merged).
    pub fn open(dir: &Path) -> Result<SavedVm, SnapshotError> {
        let snapshot = read_state(dir)?;
        if let SnapshotKind::Diff { base } = snapshot.kind {
            return Err(SnapshotError::BareDiff {
                dir: dir.to_path_buf(),
                base,
            });
        }
        let (memory, memory_path) = open_memory(dir)?;
        Ok(SavedVm {
            snapshot,
            memory,
            memory_path,
            map_memory: false,
        })
    }

    /// Opens the memory file again after a jail's preparation closed every descriptor above
    /// stderr (this one's included).
    pub fn reopen_memory(&mut self) -> Result<(), SnapshotError> {
        use std::os::fd::IntoRawFd;
        let memory = File::open(&self.memory_path).map_err(io("open", &self.memory_path))?;
        // The old descriptor is closed already (its number may be the new one's): it is let go
        // without closing it again.
        let _ = std::mem::replace(&mut self.memory, memory).into_raw_fd();
        Ok(())
    }
}
