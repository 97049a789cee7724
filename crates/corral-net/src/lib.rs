//! Host networking for corral instances. `link` changes network interfaces (bridges, veth pairs,
//! addresses) in the caller's network namespace or in a namespace named by its bind-mounted file;
//! `netns` makes and removes such files; `filter` keeps each nic to its own MAC and IP addresses;
//! `address` is a nic's IPv4 address as definitions write it.

pub mod address;
pub mod filter;
pub mod link;
pub mod netns;

pub use address::HostAddress;
pub use filter::{FilterError, NicFilter};
pub use link::{LinkError, NetnsPath};
pub use netns::NetnsError;
