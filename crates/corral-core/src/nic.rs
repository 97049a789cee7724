//! An instance's network interface as its definition holds it (`[[nics]]`): on a corral
//! network by name, or on a tap device or bridge of the host's own; it may ask for a fixed
//! address (and, on a network, port forwards). Starting a VM resolves it into the VMM's
//! `NicConfig`, which knows only taps and bridges; starting a container into a veth pair
//! (`container_net`).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::str::FromStr;

use corral_net::forward::PortForward;
use corral_net::HostAddress;
use corral_vmm::config::MacAddress;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// A corral network (`corral network list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// A tap device to use (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A bridge of the host: a VM's tap (`tap`, else a new one) is added to it; a container
    /// gets a veth pair whose host end is its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The guest's MAC address; one derived from the instance's UUID when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub mac: Option<MacAddress>,
    /// A fixed address (`10.0.3.10`, on a network a DHCP reservation; `10.0.3.10/24` on a
    /// bridge): set by corral on an application container's interface, and the only source
    /// address the nic's filter lets through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ip: Option<HostAddress>,
    /// On a bridge: the default route corral sets in an application container (on a network,
    /// the network's gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Addr>,
    /// On a bridge: the name servers of an application container's `/etc/resolv.conf` (on a
    /// network, the network's DNS server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub dns: Vec<Ipv4Addr>,
    /// Anti-spoofing, on unless `false`: the nic may send only from its own MAC and address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<bool>,
    /// Host ports forwarded to the nic's address while the instance runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub forwards: Vec<PortForward>,
}

impl Nic {
    /// Whether the nic's traffic is filtered (see [`Nic::filter`]).
    pub fn filtered(&self) -> bool {
        self.filter != Some(false)
    }

    /// Whether the nic is a port of a bridge (its own or its network's): what filters apply to.
    pub fn on_bridge(&self) -> bool {
        self.network.is_some() || self.bridge.is_some()
    }

    /// Checks the nic on its own: `network`, `tap`, `bridge`, or a `tap` on a `bridge`;
    /// `forwards` only on a network, to a fixed `ip`; `gateway` and `dns` only on a bridge of
    /// the host's (a network has its own); a unicast MAC.
    pub fn validate(&self) -> Result<(), String> {
        let backend_given = self.network.is_some() || self.tap.is_some() || self.bridge.is_some();
        if !backend_given
            || (self.network.is_some() && (self.tap.is_some() || self.bridge.is_some()))
        {
            return Err(
                "give `network`, `tap`, `bridge`, or a `tap` and the `bridge` it joins".into(),
            );
        }
        if let Some(network) = &self.network {
            corral_net::definition::validate_name(network).map_err(|err| err.to_string())?;
            if !self.forwards.is_empty() && self.ip.is_none() {
                return Err(
                    "`forwards` need the nic's fixed address: add `ip` (an address of the \
                     network's subnet outside its DHCP range)"
                        .into(),
                );
            }
            if self.gateway.is_some() || !self.dns.is_empty() {
                return Err(
                    "`gateway` and `dns` come from the network; give them only for a nic on a \
                     `bridge`"
                        .into(),
                );
            }
        } else if !self.forwards.is_empty() {
            return Err(
                "`forwards` need the nic on a corral network (`network = \"NAME\"`)".into(),
            );
        }
        if let Some(mac) = self.mac.filter(MacAddress::is_unusable) {
            return Err(format!(
                "MAC {mac} is a multicast or all-zero address; use a unicast one such as \
                 52:54:00:12:34:56"
            ));
        }
        Ok(())
    }
}

impl FromStr for Nic {
    type Err = String;

    /// `network=NAME[,ip=ADDRESS][,forward=tcp:8080:80...]`, `tap=NAME` and/or `bridge=NAME`
    /// (with `ip=A/N`, `gateway=G`, `dns=D`), each optionally with `,mac=MAC` and `,filter=off`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use network=NAME[,ip=10.0.3.10][,forward=tcp:8080:80], or tap=NAME and/or \
                     bridge=NAME[,ip=10.0.3.10/24][,gateway=10.0.3.1][,dns=10.0.3.1], optionally \
                     with ,mac=52:54:00:12:34:56 and ,filter=off";
        let mut nic = Nic::default();
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let ipv4 = || {
                value
                    .parse::<Ipv4Addr>()
                    .map_err(|_| format!("{key}={value:?} is not an IPv4 address"))
            };
            match key {
                "network" if !value.is_empty() => nic.network = Some(value.to_owned()),
                "tap" if !value.is_empty() => nic.tap = Some(value.to_owned()),
                "bridge" if !value.is_empty() => nic.bridge = Some(value.to_owned()),
                "mac" => nic.mac = Some(value.parse().map_err(|err| format!("{err}"))?),
                "ip" => nic.ip = Some(value.parse().map_err(|err| format!("{err}"))?),
                "gateway" => nic.gateway = Some(ipv4()?),
                "dns" => nic.dns.push(ipv4()?),
                "filter" => {
                    nic.filter = Some(match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("filter={value:?}: use filter=on or filter=off")),
                    })
                }
                "forward" => nic
                    .forwards
                    .push(value.parse().map_err(|err| format!("{err}"))?),
                _ => return Err(format!("invalid network interface option {key:?}: {usage}")),
            }
        }
        // Checked with the definition, which names the nic in its error.
        Ok(nic)
    }
}

/// A random locally administered address none of `used` is; recorded there.
pub(crate) fn fresh_mac(used: &mut HashSet<MacAddress>) -> MacAddress {
    loop {
        let mac = MacAddress::random_local();
        if used.insert(mac) {
            return mac;
        }
    }
}

/// The MAC address of interface `index` of the instance with `uuid` when its definition names
/// none: locally administered, and the same on every start.
pub fn stable_mac(uuid: &str, index: usize) -> MacAddress {
    MacAddress::local_from_seed(format!("{uuid}/nic{index}").as_bytes())
}

/// An interface name of nic `index` of the instance with `uuid`: `prefix` (two letters), ten hex
/// digits of the UUID and the index; stable across starts, unique per instance and nic, and at
/// most 15 characters.
pub fn derived_interface(prefix: &str, uuid: &str, index: usize) -> String {
    let digits: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(10)
        .collect();
    format!("{prefix}{digits}{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_on_a_network_parses_with_its_address_and_forwards() {
        let nic: Nic = "network=lab,ip=10.0.3.10,forward=tcp:8080:80,forward=udp:5353:53"
            .parse()
            .unwrap();
        assert_eq!(nic.network.as_deref(), Some("lab"));
        assert_eq!(nic.ip, Some("10.0.3.10".parse().unwrap()));
        assert_eq!(nic.forwards.len(), 2);
        let text = toml::to_string(&nic).unwrap();
        assert!(
            text.contains("forwards = [\"tcp:8080:80\", \"udp:5353:53\"]"),
            "{text}"
        );
        assert_eq!(toml::from_str::<Nic>(&text).unwrap(), nic);
    }

    #[test]
    fn nics_that_cannot_work_are_refused() {
        for (text, expected) in [
            ("network=lab,bridge=br0", "give `network`, `tap`, `bridge`"),
            ("", "give `network`, `tap`, `bridge`"),
            (
                "bridge=br0,forward=tcp:80:80",
                "need the nic on a corral network",
            ),
            ("network=lab,gateway=10.0.3.1", "come from the network"),
            ("bridge=br0,filter=maybe", "use filter=on or filter=off"),
            ("network=lab,forward=tcp:80", "like tcp:8080:80"),
            (
                "network=lab,forward=tcp:80:80",
                "need the nic's fixed address",
            ),
            ("network=-lab", "network name"),
            ("network=lab,mac=01:00:5e:00:00:01", "multicast"),
            ("network=lab,colour=red", "invalid network interface option"),
        ] {
            let err = text
                .parse::<Nic>()
                .and_then(|nic| nic.validate())
                .unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        for text in [
            "tap=t0,bridge=br0",
            "bridge=br0,ip=10.0.3.10/24,gateway=10.0.3.1,dns=10.0.3.1,filter=off",
        ] {
            let nic: Nic = text.parse().unwrap();
            nic.validate().unwrap();
            assert!(nic.on_bridge());
        }
    }
}
