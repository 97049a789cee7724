//! Live migration (pre-copy) between two VMMs over a unix or TCP stream: [`source`] sends a
//! running VM, [`destination`] receives it and runs it; [`protocol`] frames what they exchange.
//! See docs/vmm.md, "Live migration".

pub mod address;
pub mod destination;
pub mod protocol;
pub mod source;

use std::sync::mpsc;

pub use address::Address;
use corral_control::MigrationReport;
pub use source::MigrateParams;

use crate::config::ConfigError;
use crate::snapshot::SnapshotError;
use crate::vstate::vm::VmError;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to the migration destination {to}; is `corral vmm run --incoming` waiting there?")]
    Connect { to: Address, source: std::io::Error },
    #[error("cannot wait for a migration at {address}")]
    Listen {
        address: Address,
        source: std::io::Error,
    },
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("the migration token does not match; give both ends the same token")]
    BadToken,
    #[error("a migration token has 1 to {max} bytes; this one has {len}")]
    TokenLength { len: usize, max: usize },
    #[error(
        "this VM does not track dirty pages, so it cannot migrate live; run it with \
         --track-dirty-pages (track_dirty_pages = true in its config)"
    )]
    NotTracking,
    #[error(
        "a jailed VMM has its own network namespace and cannot reach {to}; migrate a jailed VM \
         over a unix socket in its jail directory"
    )]
    JailedTcp { to: Address },
    #[error(
        "the migration did not converge after {iterations} passes in {seconds:.1} s: the \
         {remaining} bytes still dirty would take {estimate_ms} ms at {bandwidth} bytes/s, over \
         the {limit_ms} ms downtime limit; the VM keeps running here (raise the downtime limit, \
         the iteration or time limit, or migrate when the guest writes less)"
    )]
    NotConverging {
        iterations: u32,
        seconds: f64,
        remaining: u64,
        estimate_ms: u64,
        bandwidth: u64,
        limit_ms: u64,
    },
    #[error("no guest is running (it is being restarted); retry")]
    NoGuest,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("cannot read guest memory at {address:#x}")]
    Guest {
        address: u64,
        source: vm_memory::GuestMemoryError,
    },
    #[error("cannot encode the VM configuration")]
    Encode(#[source] serde_json::Error),
    #[error("the migration source sent a configuration this VMM cannot read")]
    BadConfig(#[source] serde_json::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the migration source sent a VM state this VMM cannot read")]
    BadState { source: serde_json::Error },
    #[error("the migration source sent a VM state that does not match its configuration")]
    Inconsistent,
    #[error("the migration source sent a page at {address:#x}, outside the VM's memory")]
    OutsideMemory { address: u64 },
    #[error("cannot hold the incoming guest memory")]
    MemoryFile(#[source] std::io::Error),
}

/// Refuses a token that is empty or longer than the protocol carries.
pub fn check_token(token: &str) -> Result<(), MigrationError> {
    match token.len() {
        1..=protocol::MAX_TOKEN => Ok(()),
        len => Err(MigrationError::TokenLength {
            len,
            max: protocol::MAX_TOKEN,
        }),
    }
}

/// A `migrate` request on its way from the control socket to the main thread.
pub struct MigrateRequest {
    pub params: MigrateParams,
    pub reply: mpsc::Sender<Result<MigrationReport, MigrationError>>,
    /// Signalled once the answer is written to the client: the VMM exits after that (or a
    /// little later if the client is gone).
    pub answered: mpsc::Receiver<()>,
}
