//! Host networking for corral instances.
//!
//! - [`link`]: network interfaces (bridges, veth pairs, addresses) through iproute2, in the
//!   caller's network namespace or in one named by its bind-mounted file.
//! - [`definition`]: `network.toml`, a network's bridge, subnet, NAT, DHCP range and domain;
//!   [`cidr`] its address types.
//! - [`subnet`]: the host's routes, and a free subnet for a new network.
//! - [`forward`]: port forwards (`tcp:8080:80`) and the host ports already in use.
//! - [`nft`]: corral's nftables table (`inet corral`): NAT, forwarding, port forwards.
//! - [`networks`]: the networks under the corral root, created, changed, restored and deleted
//!   whole.

pub mod cidr;
pub mod definition;
pub mod forward;
pub mod link;
pub mod networks;
pub mod nft;
pub mod subnet;

pub use link::{LinkError, NetnsPath};
pub use networks::{NetworkError, Networks};
