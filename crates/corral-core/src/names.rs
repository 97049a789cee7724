//! The names a corral root holds, by kind: what shell completion offers after `corral start`,
//! `corral volume info`, `--image` or `--nic network=`. Listed through the stores that own them,
//! so completion agrees with the commands.

use std::path::Path;

use crate::error::CoreError;
use crate::networks::networks_in;
use crate::store::Store;
use crate::volume::Pool;

/// What a name names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Instance,
    Volume,
    /// Image aliases (fingerprints are not typed by hand).
    Image,
    Network,
}

/// The names of every `kind` under the corral root `root`, sorted; none when the root does not
/// exist, which pressing TAB must not create.
pub fn names(root: &Path, kind: NameKind) -> Result<Vec<String>, CoreError> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut names = match kind {
        NameKind::Instance => Store::open(root)?.names()?,
        NameKind::Volume => Pool::default_in(root)
            .list()
            .map_err(|err| CoreError::Volume(Box::new(err)))?
            .into_iter()
            .map(|volume| volume.name)
            .collect(),
        NameKind::Image => corral_image::store::ImageStore::open(root)
            .and_then(|store| store.aliases())
            .map_err(|err| CoreError::Image(Box::new(err)))?
            .into_keys()
            .collect(),
        NameKind::Network => networks_in(root)
            .list()?
            .into_iter()
            .map(|network| network.name)
            .collect(),
    };
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_root_has_no_names_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("corral");
        for kind in [
            NameKind::Instance,
            NameKind::Volume,
            NameKind::Image,
            NameKind::Network,
        ] {
            assert_eq!(names(&root, kind).unwrap(), Vec::<String>::new());
        }
        assert!(!root.exists(), "listing names made the root");
    }

    #[test]
    fn instances_and_volumes_are_listed_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["web", "box"] {
            let instance = dir.path().join("instances").join(name);
            std::fs::create_dir_all(&instance).unwrap();
            std::fs::write(instance.join(crate::store::DEFINITION_FILE), "").unwrap();
        }
        let pool = dir.path().join("storage/default");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("data.raw"), "").unwrap();
        assert_eq!(
            names(dir.path(), NameKind::Instance).unwrap(),
            ["box", "web"]
        );
        assert_eq!(names(dir.path(), NameKind::Volume).unwrap(), ["data"]);
        assert_eq!(
            names(dir.path(), NameKind::Network).unwrap(),
            Vec::<String>::new()
        );
    }
}
