//! corral's images: templates that instances are created from.
//!
//! - [`store`]: the content-addressed store under the corral root (`images/`): fingerprints,
//!   aliases, metadata, atomic imports, deletion guarded by the instances that use an image.
//! - [`metadata`]: what an image says about itself (architecture, OS, release, type, defaults).
//! - [`archive`]: tar archives, both ways: unpacking untrusted tarballs and layers safely (no
//!   path escapes, no device nodes, bounded), and packing a tree canonically (the fingerprint).
//! - [`oci`], [`incus`], [`disk_image`]: the formats people already have.
//! - [`ovf`]: OVF packages (`.ova`, `.ovf`) from VirtualBox and VMware: envelope, manifest, disks.
//! - [`vagrant`]: Vagrant boxes of the libvirt provider, read into a staging directory.
//! - [`bootdisk`]: a VM image's kernel, initrd and command line, found inside its disk in
//!   userspace (partition table + ext4), never by mounting it.
//!
//! Everything read here is untrusted input: a clear error, never a panic, and no half image.

pub mod archive;
pub mod bootdisk;
pub mod disk_image;
pub mod export;
pub mod import;
pub mod incus;
mod member;
pub mod metadata;
pub mod oci;
pub mod ovf;
pub mod progress;
pub mod store;
pub mod vagrant;

/// The value `names` gives `text`, or a sentence listing the names `what` may be.
fn named<T: Copy>(names: &[(&str, T)], text: &str, what: &str) -> Result<T, String> {
    match names.iter().find(|(name, _)| *name == text) {
        Some((_, value)) => Ok(*value),
        None => {
            let known: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            Err(format!("{text:?} is not {what}: use {}", known.join(", ")))
        }
    }
}
