//! Why a live migration of an instance is refused or fails.

use corral_vmm::migration::protocol::ProtocolError;
use corral_vmm::migration::{Address, MigrationError};

use crate::error::CoreError;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "instance {0} is a container; only VMs migrate live (a container's processes cannot be \
         moved): stop it and copy its directory to the other host instead"
    )]
    Container(String),
    #[error(
        "instance {name} is {status}; only a running VM migrates live: start it (`corral start \
         {name}`) or resume it (`corral resume {name}`) first"
    )]
    NotRunning { name: String, status: String },
    #[error(
        "disks[{index}] of instance {name} ({disk}) is in the instance's directory and \
         --copy-storage copies only read-only raw disks named by a relative path: copying a disk \
         the guest writes needs block migration, which corral does not do yet; move it to \
         storage both hosts reach at the same absolute path (`corral config edit {name}` while \
         stopped)"
    )]
    CopyStorage {
        name: String,
        index: usize,
        disk: String,
    },
    #[error(
        "disks[{index}] of instance {name} ({disk}) is in the instance's directory, which the \
         destination host does not reach; move it to storage both hosts reach at the same \
         absolute path (`corral config edit {name}` while stopped), or, for a read-only raw \
         disk, give --copy-storage"
    )]
    LocalDisk {
        name: String,
        index: usize,
        disk: String,
    },
    #[error(
        "disks[{index}] of instance {name} is volume {volume} of this host's storage pool, \
         which the destination host does not reach; attach the disk by an absolute path on \
         storage both hosts reach instead"
    )]
    PoolVolume {
        name: String,
        index: usize,
        volume: String,
    },
    #[error("cannot connect to {to}; is `corral migrate receive` waiting there?")]
    Connect {
        to: Address,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for a migration at {address}")]
    Listen {
        address: Address,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare the VMM's migration socket {path}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(MigrationError),
    #[error("the migration token does not match; give both ends the same token")]
    BadToken,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the migration source sent a file corral does not take: {0:?}")]
    UnexpectedFile(String),
    #[error("cannot send {path}")]
    SendFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the received file {path}")]
    ReceiveFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the migration source sent an instance definition that is not valid")]
    BadDefinition(#[source] crate::definition::DefinitionError),
    #[error(
        "an instance named {0} exists on this host already; delete or rename it here (`corral \
         delete {0}`), then migrate again"
    )]
    Exists(String),
    #[error("the source's VMM did not migrate the VM; it keeps running on the source")]
    Vmm(#[source] VmmRefusal),
    #[error("cannot make up a token for the VMM's incoming socket")]
    VmmToken(#[source] corral_host::machine_id::MachineIdError),
    #[error(
        "the VMM did not listen at {socket} within a minute; its log (run/supervisor.log) says \
         why"
    )]
    VmmNotListening { socket: String },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<crate::store::StoreError> for MigrateError {
    fn from(err: crate::store::StoreError) -> Self {
        MigrateError::Core(err.into())
    }
}

/// The VMM's own answer to a refused `migrate` request (it says why in a sentence).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VmmRefusal(pub String);
