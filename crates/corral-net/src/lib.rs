//! Host networking for corral instances.
//!
//! - [`link`]: network interfaces (bridges, veth pairs, addresses) through iproute2, in the
//!   caller's network namespace or in one named by its bind-mounted file; [`netns`] makes and
//!   removes such files.
//! - [`definition`]: `network.toml`, a network's bridge, subnet, NAT, DHCP range and domain;
//!   [`cidr`] its address types; [`address`] a nic's IPv4 address as definitions write it.
//! - [`subnet`]: the host's routes, and a free subnet for a new network.
//! - [`forward`]: port forwards (`tcp:8080:80`) and the host ports already in use.
//! - [`nft`]: corral's nftables table (`inet corral`): NAT, forwarding, port forwards.
//! - [`filter`]: keeps each nic to its own MAC and IPv4 address (`table bridge corral`).
//! - [`networks`]: the networks under the corral root, created, changed, restored and deleted
//!   whole.

pub mod address;
pub mod cidr;
pub mod counters;
pub mod definition;
pub mod filter;
pub mod forward;
pub mod link;
pub mod netns;
pub mod networks;
pub mod nft;
pub mod subnet;

pub use address::HostAddress;
pub use filter::{FilterError, NicFilter};
pub use link::{LinkError, NetnsPath};
pub use netns::NetnsError;
pub use networks::{NetworkError, Networks};
