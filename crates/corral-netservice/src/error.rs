//! What can go wrong serving a network, each failure a sentence naming the thing and the fix.

use std::path::PathBuf;

use corral_error::PathIoError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid network service setting for network {network}: {problem}")]
    Invalid { network: String, problem: String },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path} is not a valid network service file; write it again with write_config")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "dnsmasq, which serves DHCP and DNS on corral networks, is not installed; install it \
         (Debian/Ubuntu: apt-get install dnsmasq-base)"
    )]
    DnsmasqMissing,
    #[error(
        "dnsmasq runs as user {user} and cannot reach {dir}; let it search the directory \
         (chmod o+x) or keep the network's state elsewhere"
    )]
    Unreachable { user: String, dir: PathBuf },
    #[error("cannot {action} for the network service")]
    System {
        action: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("the network service in {dir} did not start: {detail}; see {dir}/service.log")]
    StartFailed { dir: PathBuf, detail: String },
    #[error("the network service in {dir} gave up: {detail}; see {dir}/service.log")]
    GaveUp { dir: PathBuf, detail: String },
    #[error("the network service in {dir} did not stop within {secs} s; see {dir}/service.log")]
    StopTimeout { dir: PathBuf, secs: u64 },
    #[error("cannot talk to the network service in {dir}")]
    Control {
        dir: PathBuf,
        #[source]
        source: corral_control::ControlError,
    },
    #[error("the network service in {dir} refused: {message}")]
    Refused { dir: PathBuf, message: String },
}

impl Error {
    /// A closure turning an I/O error into [`Error::Io`] for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io(PathIoError::new(action, path, source))
    }

    /// A closure turning a system call's error into [`Error::System`] for `map_err`.
    pub(crate) fn system(action: &'static str) -> impl FnOnce(nix::Error) -> Error {
        move |source| Error::System { action, source }
    }
}
