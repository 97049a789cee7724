//! corral's instance model, the only layer that knows both VMs and containers.
//!
//! - [`definition`]: `instance.toml`, parsed and validated.
//! - [`create`]: a new instance from a request (`corral create`'s flags, the API's body).
//! - [`events`]: the lifecycle events of every instance, journalled in the root.
//! - [`store`]: the corral root on disk: instances appear whole or not at all, state is written
//!   atomically, and every multi-step change holds the instance's [`lock`].
//! - [`state`]: `state.json` and the lifecycle states (libvirt's names).
//! - [`build`]: `corral image build`, images made from a spec.
//! - [`ovf_import`]: `corral import`, a VM instance from an OVF package (`.ova`, `.ovf`);
//!   [`ovf_export`]: `corral export`, a stopped VM instance as an OVA.
//! - [`clone`]: `corral clone`, a new instance from a stopped one; [`bases`] keeps the read-only
//!   disks linked clones share.
//! - [`migrate`]: `corral migrate`, a running VM instance moved live to another corral root.

pub mod agent;
pub mod bases;
pub mod build;
pub mod clone;
pub mod config;
pub mod console;
pub mod copy;
pub mod create;
pub mod definition;
pub mod disks;
pub mod driver;
pub mod error;
pub mod events;
pub mod exec;
pub mod failpoints;
pub mod images;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
pub mod migrate;
pub mod names;
pub mod network_service;
pub mod networks;
pub mod nic;
pub mod nic_status;
pub mod ovf_export;
pub mod ovf_import;
mod parallel;
pub mod report;
pub mod state;
pub mod stop_signal;
pub mod store;
pub mod sysprep;
pub mod trust;

pub use error::CoreError;
pub use lifecycle::Manager;
pub mod container;
pub mod container_net;
pub mod monitor;
pub mod rootfs;
pub mod seccomp;
pub mod seed;
pub mod snapshot;
pub mod userns;
pub mod vm;
pub mod volume;
pub mod volume_request;
pub mod volume_use;
