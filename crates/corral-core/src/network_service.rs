//! A managed network's DHCP and DNS service (`corral-netservice`: dnsmasq under a corral
//! supervisor) in the instance layer: started with its network (create, set, restore) and
//! removed with it; and the reservations of the instances' nics on it, each made as a run starts
//! and released as it ends: a nic's fixed `ip`, or the address corral gives an application
//! container (which runs no DHCP client of its own). A reservation also names the instance in
//! the network's DNS (`NAME.DOMAIN`).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_net::definition::{NetworkDefinition, NetworkKind};
use corral_net::Networks;
use corral_netservice::{Ipv6Config, Lease, Reservation, ServiceConfig};
use corral_vmm::config::MacAddress;

use crate::definition::Definition;
use crate::error::CoreError;
use crate::lifecycle::Manager;

/// How long a DHCP lease lasts (clients renew at half of it).
const LEASE_SECS: u32 = 3600;

/// The state directory of network `name`'s service.
pub fn service_dir(networks: &Networks, name: &str) -> PathBuf {
    networks.dir().join(name).join("service")
}

fn service_error(network: &str) -> impl FnOnce(corral_netservice::Error) -> CoreError + '_ {
    move |source| CoreError::NetworkService {
        network: network.to_owned(),
        source,
    }
}

/// The service `network` gets: a managed network with an IPv4 subnet has one.
fn service_config(
    network: &NetworkDefinition,
    reservations: Vec<Reservation>,
) -> Option<ServiceConfig> {
    let ipv4 = network
        .ipv4
        .filter(|_| network.kind == NetworkKind::Managed)?;
    let range = network.effective_dhcp_range()?;
    Some(ServiceConfig {
        network: network.name.clone(),
        bridge: network.bridge.clone(),
        gateway: ipv4.address,
        prefix_len: ipv4.prefix,
        dhcp_start: range.start,
        dhcp_end: range.end,
        lease_secs: LEASE_SECS,
        domain: network.domain.clone(),
        upstreams: network.dns_upstream.clone(),
        ipv6: network.ipv6.map(|ipv6| Ipv6Config {
            gateway: ipv6.address,
            prefix_len: ipv6.prefix,
        }),
        reservations,
    })
}

/// Lets dnsmasq, which re-reads its reservation files after dropping root, reach `dir`: every
/// directory from the corral root down gets the search bit for others (not the read bit: names
/// stay private), as Incus does with its own root.
fn make_reachable(dir: &Path, root: &Path) -> Result<(), CoreError> {
    let mut ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(root))
        .collect();
    ancestors.reverse();
    for ancestor in ancestors {
        let metadata = std::fs::metadata(ancestor).map_err(CoreError::io("read", ancestor))?;
        let mode = metadata.permissions().mode();
        if mode & 0o111 != 0o111 {
            std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o111))
                .map_err(CoreError::io("set the mode of", ancestor))?;
        }
    }
    Ok(())
}

/// A network's DHCP/DNS service as `corral network info` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ServiceStatus {
    pub running: bool,
    pub leases: Vec<Lease>,
    pub reservations: Vec<Reservation>,
}

impl Manager {
    /// The service of network `name`, `None` when it has none.
    pub fn network_service(&self, name: &str) -> Result<Option<ServiceStatus>, CoreError> {
        let networks = self.networks();
        networks.get(name)?;
        let dir = service_dir(&networks, name);
        if !dir.exists() {
            return Ok(None);
        }
        Ok(Some(ServiceStatus {
            running: corral_netservice::is_running(&dir),
            leases: corral_netservice::leases(&dir).map_err(service_error(name))?,
            reservations: corral_netservice::reservations(&dir).map_err(service_error(name))?,
        }))
    }

    /// Starts (or restarts with its current settings) the service of `network`, keeping the
    /// reservations it has; nothing for a network without one.
    pub(crate) fn start_network_service(
        &self,
        network: &NetworkDefinition,
    ) -> Result<(), CoreError> {
        let networks = self.networks();
        let dir = service_dir(&networks, &network.name);
        let reservations = corral_netservice::reservations(&dir).unwrap_or_default();
        let Some(config) = service_config(network, reservations) else {
            return Ok(());
        };
        make_reachable(&dir, self.store().root())?;
        corral_netservice::write_config(&dir, &config).map_err(service_error(&network.name))?;
        if corral_netservice::is_running(&dir) {
            corral_netservice::stop(&dir).map_err(service_error(&network.name))?;
        }
        corral_netservice::spawn_supervisor(self.exe(), &dir)
            .map_err(service_error(&network.name))?;
        Ok(())
    }

    /// Ends the service of network `name` and removes its files (nothing when it has none).
    pub(crate) fn remove_network_service(&self, name: &str) -> Result<(), CoreError> {
        let dir = service_dir(&self.networks(), name);
        if !dir.exists() {
            return Ok(());
        }
        corral_netservice::remove(&dir).map_err(service_error(name))
    }

    /// Reserves the fixed addresses of `definition`'s nics on networks (as its run starts), so
    /// its DHCP client gets that address and its name resolves.
    pub(crate) fn reserve_fixed_addresses(&self, definition: &Definition) -> Result<(), CoreError> {
        let networks = self.networks();
        for (index, nic) in definition.nics.iter().enumerate() {
            let (Some(network), Some(ip)) = (&nic.network, nic.ip) else {
                continue;
            };
            let dir = service_dir(&networks, network);
            if !dir.exists() {
                continue;
            }
            let network = networks.get(network)?;
            let mac = nic
                .mac
                .unwrap_or_else(|| crate::nic::stable_mac(&definition.uuid, index));
            reserve(&dir, &network, mac, Some(ip.address), &definition.name)?;
        }
        Ok(())
    }

    /// Releases what [`Manager::reserve_fixed_addresses`] reserved.
    pub(crate) fn release_fixed_addresses(&self, definition: &Definition) {
        let networks = self.networks();
        for (index, nic) in definition.nics.iter().enumerate() {
            if let (Some(network), Some(_)) = (&nic.network, nic.ip) {
                let mac = nic
                    .mac
                    .unwrap_or_else(|| crate::nic::stable_mac(&definition.uuid, index));
                release(&service_dir(&networks, network), mac);
            }
        }
    }
}

/// Reserves `ip` (or, when `None`, the first address of the DHCP range no reservation or lease
/// holds) for `mac` under `hostname` in the service at `dir`; returns the address.
pub fn reserve(
    dir: &Path,
    network: &NetworkDefinition,
    mac: MacAddress,
    ip: Option<Ipv4Addr>,
    hostname: &str,
) -> Result<Ipv4Addr, CoreError> {
    let range = network
        .effective_dhcp_range()
        .map(|range| (range.start, range.end));
    let mac_text = mac.to_string();
    let chosen = corral_netservice::update_reservations(dir, |reservations, leases| {
        reservations.retain(|r| !r.mac.eq_ignore_ascii_case(&mac_text));
        let address = ip.or_else(|| free_address(range?, reservations, leases, &mac_text))?;
        reservations.push(Reservation {
            mac: mac_text.clone(),
            ipv4: address,
            hostname: hostname.to_owned(),
        });
        Some(address)
    })
    .map_err(service_error(&network.name))?;
    chosen.ok_or_else(|| CoreError::NetworkFull {
        network: network.name.clone(),
    })
}

/// The first address of `range` that no reservation holds and no other client leases.
fn free_address(
    (start, end): (Ipv4Addr, Ipv4Addr),
    reservations: &[Reservation],
    leases: &[Lease],
    mac: &str,
) -> Option<Ipv4Addr> {
    (u32::from(start)..=u32::from(end))
        .map(Ipv4Addr::from)
        .find(|candidate| {
            !reservations.iter().any(|r| r.ipv4 == *candidate)
                && !leases
                    .iter()
                    .any(|l| l.ip == *candidate && !l.mac.eq_ignore_ascii_case(mac))
        })
}

/// Drops the reservation of `mac` from the service at `dir` (when it and the service exist).
pub fn release(dir: &Path, mac: MacAddress) {
    if !dir.exists() {
        return;
    }
    let mac = mac.to_string();
    if let Err(err) = corral_netservice::update_reservations(dir, |reservations, _| {
        reservations.retain(|r| !r.mac.eq_ignore_ascii_case(&mac))
    }) {
        tracing::warn!(
            "cannot release the address of {mac} in {}: {err}",
            dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_address_skips_reservations_and_other_clients_leases() {
        let range = (Ipv4Addr::new(10, 0, 3, 2), Ipv4Addr::new(10, 0, 3, 4));
        let reservations = vec![Reservation {
            mac: "52:54:00:00:00:01".into(),
            ipv4: Ipv4Addr::new(10, 0, 3, 2),
            hostname: "a".into(),
        }];
        let lease = |mac: &str, last| Lease {
            mac: mac.into(),
            ip: Ipv4Addr::new(10, 0, 3, last),
            hostname: None,
            expires: 0,
            client_id: None,
        };
        let leases = vec![lease("52:54:00:00:00:02", 3)];
        assert_eq!(
            free_address(range, &reservations, &leases, "52:54:00:00:00:09"),
            Some(Ipv4Addr::new(10, 0, 3, 4))
        );
        // Its own lease does not keep a client from its address.
        assert_eq!(
            free_address(range, &reservations, &leases, "52:54:00:00:00:02"),
            Some(Ipv4Addr::new(10, 0, 3, 3))
        );
        let full = vec![lease("52:54:00:00:00:03", 4), lease("52:54:00:00:00:02", 3)];
        assert_eq!(
            free_address(range, &reservations, &full, "52:54:00:00:00:09"),
            None
        );
    }
}
