//! Live migration of VM instances between two corral roots (two hosts, or two roots on one
//! host): [`source`] is `corral migrate NAME ADDR`, [`destination`] is `corral migrate
//! receive`; [`protocol`] frames what the two corral ends say to each other, [`relay`] carries
//! the VMMs' own migration stream (corral-vmm's `migration`) over the same connection.
//!
//! The instance's disks stay where they are: both hosts must reach them at the same absolute
//! path (shared storage). The source VMM flushes them and releases their locks only once its
//! guest is paused for the last pass; the destination VMM opens them only after that. What
//! else the guest has open from the instance directory (its cloud-init seed; with
//! `--copy-storage`, its read-only raw disks: [`copied_disk`]) travels with the definition. See
//! docs/instances.md, "Live migration".

pub mod destination;
pub mod error;
pub mod protocol;
pub mod relay;
pub mod source;

pub use destination::{ReceiveOptions, Received};
pub use error::MigrateError;
pub use source::{MigrateOptions, Migrated};

use std::path::{Component, Path};

use crate::definition::{Definition, Disk, DiskFormat};

/// The files of an instance directory a migrated VM needs (it has them open as disks).
pub const MIGRATED_FILES: [&str; 1] = ["cidata.img"];

/// Where `--copy-storage` finds disk `disk` in the instance directory, if it copies it: a
/// read-only raw disk named by a relative path that stays inside the directory. Read-only, it
/// cannot change while it is copied (the VMM's read lock keeps writers out); raw, it has no
/// backing file to bring along. A disk the guest writes would need block migration.
pub fn copied_disk(disk: &Disk) -> Option<&Path> {
    let path = disk.path.as_deref()?;
    let inside = path
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    (disk.readonly && disk.format == Some(DiskFormat::Raw) && inside).then_some(path)
}

/// Whether a file named `name` (relative to the instance directory) may come with `definition`.
pub fn may_receive(definition: &Definition, name: &str) -> bool {
    MIGRATED_FILES.contains(&name)
        || definition
            .disks
            .iter()
            .filter_map(copied_disk)
            .any(|path| path == Path::new(name))
}

/// The unix socket, in the instance's runtime directory, between a VMM and its corral.
pub const VMM_SOCKET: &str = "migrate.sock";

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(disks: &str) -> Definition {
        let text = format!(
            "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
             [boot]\nkernel = \"vmlinux\"\n{disks}"
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn a_source_may_send_only_the_seed_and_the_read_only_raw_disks_its_definition_names() {
        let definition = definition(
            "[[disks]]\npath = \"data/iso.raw\"\nformat = \"raw\"\nreadonly = true\n\
             [[disks]]\npath = \"root.raw\"\nformat = \"raw\"\n\
             [[disks]]\npath = \"../outside.raw\"\nformat = \"raw\"\nreadonly = true\n\
             [[disks]]\npath = \"/srv/shared.raw\"\nformat = \"raw\"\nreadonly = true\n",
        );
        assert!(may_receive(&definition, "cidata.img"));
        assert!(may_receive(&definition, "data/iso.raw"));
        // A writable disk, a name outside the instance directory, an absolute one, a name the
        // definition does not give: a hostile source cannot write them on the destination.
        for name in [
            "root.raw",
            "../outside.raw",
            "/srv/shared.raw",
            "data/../cidata.img",
            "instance.toml",
            "/etc/passwd",
        ] {
            assert!(!may_receive(&definition, name), "{name}");
        }
    }
}
