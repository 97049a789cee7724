//! The destination of a live migration (`corral vmm run --incoming ADDR`): waits for one source,
//! checks its token, and receives the VM's configuration, its memory (into a sparse memory
//! file, as a snapshot's) and its state; the VMM then restores it as `--restore` does and, once
//! the vCPUs run, tells the source ([`Incoming::confirm_running`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::memfd::{memfd_create, MFdFlags};
use vm_memory::GuestAddress;

use super::address::{Address, Connection};
use super::protocol::{self, Kind, ProtocolError};
use super::MigrationError;
use crate::arch::x86_64::ram_regions;
use crate::config::VmConfig;
use crate::snapshot::{file, SavedVm, Snapshot, SnapshotKind};

/// How long the source may be silent once it has connected (it sends while the guest runs).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What names the received memory in errors.
const STREAM: &str = "the migration stream";

/// A VM received from a source, ready to restore.
pub struct Incoming {
    pub saved: SavedVm,
    ack: Ack,
}

impl Incoming {
    pub fn into_parts(self) -> (SavedVm, Ack) {
        (self.saved, self.ack)
    }
}

/// The connection to the source, kept to confirm the VM runs.
pub struct Ack(Connection);

impl std::os::fd::AsRawFd for Ack {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Ack {
    /// Tells the source the VM runs here, so that it ends its own.
    pub fn confirm_running(mut self) -> Result<(), ProtocolError> {
        protocol::write(&mut self.0, Kind::Running, &[])
    }
}

/// Waits at `address` for one source with `token` and receives its VM. Any failure is told to
/// the source (which keeps running its VM) and returned.
pub fn receive(address: &Address, token: &str) -> Result<Incoming, MigrationError> {
    super::check_token(token)?;
    tracing::info!("waiting for a migration at {address}");
    let mut connection =
        Connection::accept_one(address).map_err(|source| MigrationError::Listen {
            address: address.clone(),
            source,
        })?;
    connection
        .set_timeout(IO_TIMEOUT)
        .map_err(ProtocolError::Io)?;
    match receive_vm(&mut connection, token) {
        Ok(saved) => Ok(Incoming {
            saved,
            ack: Ack(connection),
        }),
        Err(err) => {
            protocol::send_error(&mut connection, &corral_host::error_chain(&err));
            Err(err)
        }
    }
}

fn receive_vm(connection: &mut Connection, token: &str) -> Result<SavedVm, MigrationError> {
    let hello = protocol::expect(connection, Kind::Hello)?;
    if !protocol::token_matches(&hello, token.as_bytes()) {
        return Err(MigrationError::BadToken);
    }
    protocol::write(connection, Kind::Ready, &[])?;
    let config: VmConfig = serde_json::from_slice(&protocol::expect(connection, Kind::Config)?)
        .map_err(MigrationError::BadConfig)?;
    config.validate()?;
    let memory = MemoryFile::new(config.memory.0)?;
    let state = loop {
        match protocol::read(connection)? {
            (Kind::Pages, payload) => {
                for (address, page) in protocol::pages(&payload)? {
                    memory.write(address, page)?;
                }
            }
            (Kind::State, payload) => break payload,
            (Kind::Error, message) => {
                return Err(ProtocolError::Refused(String::from_utf8_lossy(&message).into()).into())
            }
            (found, _) => {
                return Err(ProtocolError::Unexpected {
                    expected: Kind::State,
                    found,
                }
                .into())
            }
        }
    };
    let path = Path::new(STREAM);
    let payload = file::decode(path, &state).map_err(crate::snapshot::SnapshotError::from)?;
    let snapshot: Snapshot =
        serde_json::from_slice(payload).map_err(|source| MigrationError::BadState { source })?;
    if snapshot.kind != SnapshotKind::Full
        || snapshot.config.memory != config.memory
        || snapshot.vcpus.len() != usize::from(snapshot.config.vcpus)
    {
        return Err(MigrationError::Inconsistent);
    }
    tracing::info!("received a VM with {} of memory", config.memory);
    Ok(SavedVm {
        snapshot,
        memory: memory.file,
        memory_path: PathBuf::from(STREAM),
        map_memory: true,
    })
}

/// Guest memory as it arrives: a sparse in-memory file laid out as a snapshot's `memory`.
struct MemoryFile {
    file: File,
    /// Each RAM region's guest address, length and offset in the file.
    layout: Vec<(GuestAddress, u64, u64)>,
}

impl MemoryFile {
    fn new(size: u64) -> Result<MemoryFile, MigrationError> {
        let fd = memfd_create(c"corral-migration", MFdFlags::MFD_CLOEXEC)
            .map_err(|errno| MigrationError::MemoryFile(errno.into()))?;
        let file = File::from(fd);
        file.set_len(size).map_err(MigrationError::MemoryFile)?;
        let mut offset = 0;
        let layout = ram_regions(size)
            .into_iter()
            .map(|(start, len)| {
                let entry = (start, len as u64, offset);
                offset += len as u64;
                entry
            })
            .collect();
        Ok(MemoryFile { file, layout })
    }

    /// Stores the page at guest `address`; an address outside guest RAM is refused.
    fn write(&self, address: u64, page: &[u8]) -> Result<(), MigrationError> {
        let offset = self
            .layout
            .iter()
            .find(|(start, len, _)| address >= start.0 && address - start.0 < *len)
            .map(|(start, _, offset)| offset + (address - start.0))
            .ok_or(MigrationError::OutsideMemory { address })?;
        self.file
            .write_all_at(page, offset)
            .map_err(MigrationError::MemoryFile)
    }
}
