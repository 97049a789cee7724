//! The root's storage pool as the manager serves it, and which instances use a pool volume: a
//! volume an instance's disk names (by name, or by the volume's path) cannot be deleted from
//! under it.

use crate::definition::Definition;
use crate::volume::Pool;
use crate::{CoreError, Manager};

impl Manager {
    /// The root's default storage pool.
    pub fn pool(&self) -> Pool {
        Pool::default_in(self.store().root())
    }

    /// The instances whose disks use volume `name` of `pool`, as `instance NAME`.
    pub fn volume_users(&self, pool: &Pool, name: &str) -> Result<Vec<String>, CoreError> {
        let (path, _) = pool.find(name)?;
        let mut users = Vec::new();
        for instance in self.store().names()? {
            let definition = self.store().definition(&instance)?;
            let dir = self.store().instance_dir(&instance);
            let uses = definition.disks.iter().any(|disk| {
                disk.volume.as_deref() == Some(name)
                    || disk
                        .path
                        .as_ref()
                        .is_some_and(|p| Definition::resolve(&dir, p) == path)
            });
            if uses {
                users.push(format!("instance {instance}"));
            }
        }
        Ok(users)
    }

    /// Deletes volume `name` of `pool`, refused while an instance or another volume (an
    /// overlay on it) uses it.
    pub fn delete_volume(&self, pool: &Pool, name: &str) -> Result<(), CoreError> {
        let users = self.volume_users(pool, name)?;
        Ok(pool.delete(name, &users)?)
    }
}
