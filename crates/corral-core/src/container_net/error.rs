//! Why a container's network could not be set up.

use corral_net::{FilterError, HostAddress, LinkError, NetnsError};

#[derive(Debug, thiserror::Error)]
pub enum NicError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(
        "nics[{index}] names bridge {bridge}, which does not exist; create it or name another"
    )]
    NoBridge { index: usize, bridge: String },
    #[error(
        "nics[{index}].ip {ip} has no prefix length, which an application container needs; \
         write it like {ip}/24"
    )]
    NoPrefix { index: usize, ip: HostAddress },
}
