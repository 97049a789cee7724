//! Host networking for corral instances. `link` changes network interfaces (bridges, veth pairs,
//! addresses) in the caller's network namespace or in a namespace named by its bind-mounted file.

pub mod link;

pub use link::{LinkError, NetnsPath};
