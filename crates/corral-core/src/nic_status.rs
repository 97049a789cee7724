//! What an instance's nics are, for `corral info`: each nic's network or bridge, the host
//! interface it uses, its MAC and its address: the one the current run set (an application
//! container's), else the network's DHCP lease for its MAC, else its fixed `ip`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use corral_net::forward::PortForward;
use corral_vmm::config::MacAddress;

use crate::definition::Kind;
use crate::error::CoreError;
use crate::lifecycle::Manager;
use crate::network_service::service_dir;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicStatus {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The bridge the nic is a port of (its network's, or its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The host's end: a VM's tap, a container's veth.
    pub host_interface: String,
    pub mac: MacAddress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_source: Option<IpSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<PortForward>,
    pub filtered: bool,
}

/// Where a nic's address comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// The current run set it (an application container's).
    Run,
    /// The network's DHCP lease for the nic's MAC.
    Lease,
    /// The nic's fixed `ip`.
    Fixed,
}

impl std::fmt::Display for IpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpSource::Run => "run",
            IpSource::Lease => "lease",
            IpSource::Fixed => "fixed",
        })
    }
}

impl Manager {
    /// The nics of instance `name` (see the module documentation).
    pub fn nic_status(&self, name: &str) -> Result<Vec<NicStatus>, CoreError> {
        let definition = self.store().definition(name)?;
        let paths = self.paths(name)?;
        let networks = self.networks();
        let recorded = crate::container_net::recorded(&paths);
        let mut statuses = Vec::new();
        for (index, nic) in definition.nics.iter().enumerate() {
            let mac = nic
                .mac
                .unwrap_or_else(|| crate::nic::stable_mac(&definition.uuid, index));
            let host_interface = match definition.kind {
                Kind::Container => crate::container_net::host_interface(&definition.uuid, index),
                Kind::Vm => crate::vm::host_interface(&definition, index),
            };
            let bridge = match &nic.network {
                Some(network) => networks.get(network).ok().map(|n| n.bridge),
                None => nic.bridge.clone(),
            };
            let run_address = recorded
                .iter()
                .find(|r| r.index == index)
                .and_then(|r| r.address)
                .map(|a| a.address);
            let lease = nic.network.as_ref().and_then(|network| {
                let leases = corral_netservice::leases(&service_dir(&networks, network)).ok()?;
                let mac = mac.to_string();
                leases
                    .into_iter()
                    .find(|lease| lease.mac.eq_ignore_ascii_case(&mac))
                    .map(|lease| lease.ip)
            });
            let (ip, ip_source) = match (run_address, lease, nic.ip) {
                (Some(ip), _, _) => (Some(ip), Some(IpSource::Run)),
                (None, Some(ip), _) => (Some(ip), Some(IpSource::Lease)),
                (None, None, Some(ip)) => (Some(ip.address), Some(IpSource::Fixed)),
                (None, None, None) => (None, None),
            };
            statuses.push(NicStatus {
                index,
                network: nic.network.clone(),
                bridge,
                host_interface,
                mac,
                ip,
                ip_source,
                forwards: nic.forwards.clone(),
                filtered: nic.filtered() && nic.on_bridge(),
            });
        }
        Ok(statuses)
    }
}
