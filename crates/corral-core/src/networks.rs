//! corral networks (`corral network ...`): corral-net's [`Networks`] under the corral root, with
//! what only the instance layer knows: which instances use a network.
//!
//! The network's DHCP/DNS service (its supervisor, `network_service.rs`) is started and stopped
//! here, around the corral-net calls: after a create, a set or a restore, before a delete.

use std::path::Path;

use corral_net::definition::NetworkDefinition;
pub use corral_net::networks::DEFAULT_NETWORK;
use corral_net::networks::{NetworkInfo, NetworkRequest};
use corral_net::{NetworkError, Networks};

use crate::definition::Definition;
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::lifecycle::Manager;
use crate::nic::Nic;
use corral_vmm::config::MacAddress;

/// The networks of the corral root `root` (`ROOT/networks/`).
pub fn networks_in(root: &Path) -> Networks {
    Networks::new(root.join("networks"))
}

/// The network nic `index` of `definition` names, checked to exist and to hold the nic's fixed
/// address, if it has one; `None` for a nic on a tap or bridge of the host's own.
pub fn nic_network(
    networks: &Networks,
    definition: &Definition,
    index: usize,
    nic: &Nic,
) -> Result<Option<NetworkDefinition>, CoreError> {
    let Some(name) = &nic.network else {
        return Ok(None);
    };
    let nic_error = |source| CoreError::NicNetwork {
        instance: definition.name.clone(),
        index,
        source: Box::new(source),
    };
    let network = networks.get(name).map_err(nic_error)?;
    if let (Some(ip), Some(v4)) = (nic.ip.map(|ip| ip.address), network.ipv4) {
        if !v4.contains(ip) || ip == v4.address || ip == v4.network() || ip == v4.broadcast() {
            return Err(nic_error(NetworkError::NicAddress {
                network: network.name,
                address: ip,
                gateway: v4,
            }));
        }
    }
    Ok(Some(network))
}

/// Who holds the port forwards of nic `index` of instance `name`.
fn forward_owner(name: &str, index: usize) -> String {
    format!("{name}/{index}")
}

impl Manager {
    pub fn networks(&self) -> Networks {
        networks_in(self.store().root())
    }

    /// Creates a network (see [`Networks::create`]).
    pub fn network_create(&self, request: &NetworkRequest) -> Result<NetworkDefinition, CoreError> {
        let networks = self.networks();
        let network = networks.create(request)?;
        // A network whose service cannot start is not made at all.
        if let Err(err) = self.start_network_service(&network) {
            let _ = self.remove_network_service(&network.name);
            if let Err(undo) = networks.delete(&network.name, &[]) {
                tracing::warn!("cannot remove network {} again: {undo}", network.name);
            }
            return Err(err);
        }
        Ok(network)
    }

    /// Gives `definition` a nic on network `name`; the network `default` is created on first
    /// use (with a free subnet, NAT and its DHCP/DNS service), any other must exist.
    pub fn join_network(&self, definition: &mut Definition, name: &str) -> Result<(), CoreError> {
        let networks = self.networks();
        match networks.get(name) {
            Err(NetworkError::NotFound(_)) if name == DEFAULT_NETWORK => {
                let request = NetworkRequest {
                    name: DEFAULT_NETWORK.to_owned(),
                    ..NetworkRequest::default()
                };
                match self.network_create(&request) {
                    // Another command made it meanwhile.
                    Err(CoreError::Network(err)) if matches!(*err, NetworkError::Exists(_)) => {}
                    made => drop(made?),
                }
            }
            found => drop(found?),
        }
        definition.nics.push(Nic {
            network: Some(name.to_owned()),
            ..Nic::default()
        });
        Ok(())
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
        let networks = self.networks();
        // Checked here too, so a network in use keeps its service.
        networks.get(name)?;
        if users.is_empty() {
            self.remove_network_service(name)?;
        }
        Ok(networks.delete(name, &users)?)
    }

    /// Changes settings of network `name` (`KEY=VALUE` pairs split) and applies them.
    pub fn network_set(
        &self,
        name: &str,
        changes: &[(String, String)],
    ) -> Result<NetworkDefinition, CoreError> {
        let network = self.networks().set(name, changes)?;
        self.start_network_service(&network)?;
        Ok(network)
    }

    /// Brings every network's bridge and corral's nftables table back (at host boot, before
    /// instances start).
    pub fn network_restore(&self) -> Result<(), CoreError> {
        let networks = self.networks();
        networks.restore()?;
        for network in networks.list()? {
            let dir = crate::network_service::service_dir(&networks, &network.name);
            if !corral_netservice::is_running(&dir) {
                self.start_network_service(&network)?;
            }
        }
        Ok(())
    }

    /// Puts the port forwards of `definition`'s nics in effect (as its run starts); on failure
    /// none is.
    pub(crate) fn apply_forwards(&self, definition: &Definition) -> Result<(), CoreError> {
        let networks = self.networks();
        for (index, nic) in definition.nics.iter().enumerate() {
            let (Some(network), Some(ip)) = (&nic.network, nic.ip.map(|ip| ip.address)) else {
                continue;
            };
            if nic.forwards.is_empty() {
                continue;
            }
            let owner = forward_owner(&definition.name, index);
            if let Err(source) = networks.set_forwards(network, &owner, ip, &nic.forwards) {
                self.release_forwards(definition);
                return Err(CoreError::NicNetwork {
                    instance: definition.name.clone(),
                    index,
                    source: Box::new(source),
                });
            }
        }
        Ok(())
    }

    /// Ends what a run of `definition`'s instance left: what its supervisor ran (the driver's
    /// part), its port forwards and its address reservations.
    pub(crate) fn clean_up_run(&self, definition: &Definition, paths: &InstancePaths) {
        self.driver(definition.kind)
            .clean_up_lost_run(&definition.name, paths);
        self.release_forwards(definition);
        self.release_fixed_addresses(definition);
    }

    pub(crate) fn release_forwards(&self, definition: &Definition) {
        let networks = self.networks();
        for index in 0..definition.nics.len() {
            let owner = forward_owner(&definition.name, index);
            if let Err(err) = networks.clear_forwards(&owner) {
                tracing::warn!("cannot remove the port forwards of {owner}: {err}");
            }
        }
    }

    /// Refuses to start `definition` when one of its nics on a network has the MAC of another
    /// instance's nic on that network (two such guests would take each other's frames).
    pub(crate) fn check_unique_macs(&self, definition: &Definition) -> Result<(), CoreError> {
        let on_networks = |d: &Definition| -> Vec<(String, MacAddress)> {
            d.nics
                .iter()
                .enumerate()
                .filter_map(|(index, nic)| {
                    let mac = nic
                        .mac
                        .unwrap_or_else(|| crate::nic::stable_mac(&d.uuid, index));
                    Some((nic.network.clone()?, mac))
                })
                .collect()
        };
        let mine = on_networks(definition);
        if mine.is_empty() {
            return Ok(());
        }
        for instance in self.store().names()? {
            if instance == definition.name {
                continue;
            }
            let other = self.store().definition(&instance)?;
            for (network, mac) in on_networks(&other) {
                if mine.contains(&(network.clone(), mac)) {
                    return Err(CoreError::MacInUse {
                        name: definition.name.clone(),
                        mac,
                        network,
                        other: instance,
                    });
                }
            }
        }
        Ok(())
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
