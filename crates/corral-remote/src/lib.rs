//! corral's CLI as a client of a remote `corral serve --listen` (`corral remote`, `corral
//! --remote NAME ...`), as Incus's remotes are:
//!
//! - [`remotes`]: the remotes this user knows (`remotes.toml` in the config directory), each an
//!   address and the fingerprint its server's certificate must have.
//! - [`client`]: the API over TLS, the server pinned by that fingerprint (corral-tls's
//!   `PinnedServer`), this user's own certificate (made at first use) presented; enrolment with
//!   a join token.
//! - [`websocket`]: the API's websockets (exec, console) over the same TLS.

pub mod client;
pub mod remotes;
pub mod websocket;

use std::path::PathBuf;

pub use client::{Client, RemoteError};
pub use remotes::{Remote, Remotes};
pub use websocket::{Incoming, WebSocket};

/// Where this user's remotes and client identity live: `$CORRAL_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/corral`, else `~/.config/corral`.
pub fn config_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    var("CORRAL_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|dir| dir.join("corral")))
        .or_else(|| var("HOME").map(|home| home.join(".config").join("corral")))
}
