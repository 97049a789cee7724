//! Live migration of VM instances between two corral roots (two hosts, or two roots on one
//! host): [`source`] is `corral migrate NAME ADDR`, [`destination`] is `corral migrate
//! receive`; [`protocol`] frames what the two corral ends say to each other, [`relay`] carries
//! the VMMs' own migration stream (corral-vmm's `migration`) over the same connection.
//!
//! The instance's disks stay where they are: both hosts must reach them at the same absolute
//! path (shared storage). The source VMM flushes them and releases their locks only once its
//! guest is paused for the last pass; the destination VMM opens them only after that. What
//! else the guest has open from the instance directory (its cloud-init seed) travels with the
//! definition. See docs/instances.md, "Live migration".

pub mod destination;
pub mod error;
pub mod protocol;
pub mod relay;
pub mod source;

pub use destination::{ReceiveOptions, Received};
pub use error::MigrateError;
pub use source::{MigrateOptions, Migrated};

/// The files of an instance directory a migrated VM needs (it has them open as disks).
pub const MIGRATED_FILES: [&str; 1] = ["cidata.img"];

/// The unix socket, in the instance's runtime directory, between a VMM and its corral.
pub const VMM_SOCKET: &str = "migrate.sock";
