//! Host-side and guest-side facts for corral.
//!
//! - [`check`]: `corral host check`, the equivalent of `virt-host-validate` for VMs and containers,
//!   and [`facts`]: what `corral host info` shows. Facts are gathered once from the live system
//!   (or from fixture files), and verdicts are pure functions of them.
//! - [`detect`]: `corral guest detect`, what `systemd-detect-virt` does, from inside a machine.
//! - [`machine_id`]: show, ensure and regenerate `/etc/machine-id`, also on an offline root.
//! - [`account`]: the `corral` system user that jailed VMMs run as.

pub mod account;
pub mod atomic;
pub mod cgroups;
pub mod check;
pub mod cpu;
pub mod detect;
mod error_chain;
pub mod facts;
pub mod fsroot;
pub mod kvm;
pub mod machine_id;
pub mod modules;
pub mod mountinfo;
pub mod namespaces;
pub mod process;
pub mod program;
pub mod terminal;
pub mod tree;

pub use error_chain::error_chain;

#[cfg(test)]
mod fixtures;
