//! cloud-init NoCloud seeds: the `[cloud_init]` table of a definition (`config`), the seed files
//! made from it (`seed`, with `network` for a generated network-config and `validate` for the
//! checks), `corral create`'s shortcuts (`shortcuts`), and the two ways a guest gets them: a
//! `CIDATA` vfat image for a VM (`vfat`, or ISO 9660 with `iso`) and the seed directory of a container's root
//! (`rootfs`). Knows nothing of instances: corral-core hands in the identity and the nics.

pub mod config;
pub mod error;
pub mod iso;
pub mod network;
pub mod rootfs;
pub mod seed;
pub mod shortcuts;
pub mod validate;
pub mod vfat;

pub use config::{CloudInit, Content, FileRef, MetaData, SeedFormat};
pub use error::SeedError;
pub use network::Interface;
pub use seed::{instance_id, Identity, Seed};
pub use shortcuts::Shortcuts;

/// YAML text of a value made of strings, numbers, booleans, sequences and mappings, which
/// serde_yaml always serialises.
pub(crate) fn yaml(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value).unwrap_or_default()
}
