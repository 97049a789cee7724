//! OVF packages (`.ova`, `.ovf`), the format VirtualBox and VMware exchange machines in: read
//! as untrusted input (no DTDs or entities, bounded sizes and counts, plain tar members only,
//! digests checked against the manifest, declared capacities against the images).
//!
//! - [`envelope`]: the `.ovf` XML into plain data (files, disks, networks, virtual systems).
//! - [`units`]: allocation units (`byte * 2^20`, `MegaBytes`).
//! - [`manifest`]: the `.mf` digests.
//! - [`package`]: an OVA or an `.ovf` with its files: the envelope first, the files on demand.
//! - [`disks`]: a system's disks as standalone qcow2 files.
//! - [`export`]: the other way: a machine written as an OVA (envelope, manifest, streamed VMDK).
//!
//! Mapping a system to an instance and back is corral-core's (`ovf_import`, `ovf_export`):
//! this crate knows nothing of instances.

pub mod disks;
pub mod envelope;
mod error;
pub mod export;
pub mod manifest;
pub mod package;
pub mod units;

pub use error::OvfError;
