//! corral networks (`corral network ...`): corral-net's [`Networks`] under the corral root, with
//! what only the instance layer knows: which instances use a network.
//!
//! The network's DHCP/DNS service (its supervisor) is started and stopped here, around the
//! corral-net calls: after a create, a set or a restore, before a delete.

use std::path::Path;

use corral_net::definition::NetworkDefinition;
use corral_net::networks::{NetworkInfo, NetworkRequest};
use corral_net::Networks;

use crate::error::CoreError;
use crate::lifecycle::Manager;

/// The networks of the corral root `root` (`ROOT/networks/`).
pub fn networks_in(root: &Path) -> Networks {
    Networks::new(root.join("networks"))
}

impl Manager {
    pub fn networks(&self) -> Networks {
        networks_in(self.store().root())
    }

    /// Creates a network (see [`Networks::create`]).
    pub fn network_create(&self, request: &NetworkRequest) -> Result<NetworkDefinition, CoreError> {
        Ok(self.networks().create(request)?)
    }

    pub fn network_list(&self) -> Result<Vec<NetworkDefinition>, CoreError> {
        Ok(self.networks().list()?)
    }

    pub fn network_info(&self, name: &str) -> Result<NetworkInfo, CoreError> {
        Ok(self.networks().info(name)?)
    }

    /// Deletes network `name`, refused while an instance's nic names it.
    pub fn network_delete(&self, name: &str) -> Result<(), CoreError> {
        let users = self.network_users(name)?;
        Ok(self.networks().delete(name, &users)?)
    }

    /// Changes settings of network `name` (`KEY=VALUE` pairs split) and applies them.
    pub fn network_set(
        &self,
        name: &str,
        changes: &[(String, String)],
    ) -> Result<NetworkDefinition, CoreError> {
        Ok(self.networks().set(name, changes)?)
    }

    /// Brings every network's bridge and corral's nftables table back (at host boot, before
    /// instances start).
    pub fn network_restore(&self) -> Result<(), CoreError> {
        Ok(self.networks().restore()?)
    }

    /// The instances whose definition puts a nic on network `name`.
    pub fn network_users(&self, name: &str) -> Result<Vec<String>, CoreError> {
        let mut users = Vec::new();
        for instance in self.store().names()? {
            let definition = self.store().definition(&instance)?;
            if definition
                .nics
                .iter()
                .any(|nic| nic.network.as_deref() == Some(name))
            {
                users.push(instance);
            }
        }
        Ok(users)
    }
}
