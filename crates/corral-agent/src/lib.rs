//! corral's guest agent: `corral guest agent` runs it inside a guest, and the host drives it.
//!
//! - [`frame`]: the wire format (length-prefixed JSON messages and raw data frames, bounded).
//! - [`message`]: the protocol's requests and replies, versioned by [`PROTOCOL_VERSION`].
//! - [`server`]: the agent, on a vsock port (VMs) or a unix socket (system containers).
//! - [`client`]: the host's side, which treats every answer as untrusted (bounded, validated,
//!   timed out).
//! - [`install`]: the agent put into a guest's root filesystem and started by its init.
//!
//! The protocol is described in `docs/agent.md`.

pub mod client;
pub mod frame;
pub mod install;
pub mod message;
pub mod server;

pub use client::{Client, ClientError, Transport};
pub use message::PROTOCOL_VERSION;

/// The vsock port the agent listens on in a VM.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
/// Where a system container's agent listens (a directory the host bind-mounts in).
pub const CONTAINER_SOCKET: &str = "/run/corral-agent/agent.sock";
