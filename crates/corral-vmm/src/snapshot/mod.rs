//! Snapshots: a paused VM saved into a directory (`state` + `memory`) and restored by a new
//! VMM process (`corral vmm run --restore DIR`).
//!
//! `state` ([`file`]) holds the VM's configuration (so a restore needs no other flags), the
//! VM-wide KVM state, every vCPU's KVM state and the devices' state; `memory` ([`memory`]) is
//! guest RAM, sparse. The main thread saves while the vCPUs are paused and restores before
//! they first run; the order of the KVM calls is in [`crate::vstate::vcpu_state`].

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
use memory::MemoryFileError;

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

/// Everything `state` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
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

/// Writes `memory` then `state` into `dir` (prepared by [`prepare_dir`]): a `state` file is
/// only there once the snapshot is complete.
pub fn write(
    dir: &Path,
    snapshot: &Snapshot,
    guest_memory: &vm_memory::GuestMemoryMmap,
) -> Result<(), SnapshotError> {
    let written = memory::save(guest_memory, &dir.join(MEMORY_FILE))?;
    let payload = serde_json::to_vec(snapshot).map_err(SnapshotError::Encode)?;
    corral_host::atomic::write_file(
        &dir.join(STATE_FILE),
        &file::encode(&payload),
        corral_host::atomic::PRIVATE_FILE_MODE,
    )?;
    tracing::info!(
        "snapshot saved in {}: {written} bytes of guest memory written",
        dir.display()
    );
    Ok(())
}

/// A snapshot opened for restoring: its state checked and decoded, its memory file open (so a
/// jailed or confined VMM reads it without opening anything later).
pub struct SavedVm {
    pub snapshot: Snapshot,
    pub memory: File,
    pub memory_path: PathBuf,
}

impl SavedVm {
    pub fn open(dir: &Path) -> Result<SavedVm, SnapshotError> {
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
        let memory_path = dir.join(MEMORY_FILE);
        let memory = File::open(&memory_path).map_err(io("open", &memory_path))?;
        Ok(SavedVm {
            snapshot,
            memory,
            memory_path,
        })
    }
}
