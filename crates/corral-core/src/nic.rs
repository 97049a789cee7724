//! An instance's network interface as its definition holds it (`[[nics]]`): on a corral
//! network by name, or on a tap device or bridge of the host's own; on a network it may also ask
//! for a fixed address and port forwards. Starting a VM resolves it into the VMM's
//! [`NicConfig`], which knows only taps and bridges.

use std::net::Ipv4Addr;
use std::str::FromStr;

use corral_net::forward::PortForward;
use corral_vmm::config::{MacAddress, NicConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// A corral network (`corral network list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// A tap device to use (created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// A bridge of the host to attach a new tap device to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The guest's MAC address; one derived from the instance's UUID when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddress>,
    /// A fixed address on the network (a DHCP reservation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Host ports forwarded to the nic's address while the instance runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<PortForward>,
}

impl Nic {
    /// Checks the nic on its own: exactly one of `network`, `tap` and `bridge`; `ip` and
    /// `forwards` only on a network, forwards only to a fixed `ip`; a unicast MAC.
    pub fn validate(&self) -> Result<(), String> {
        let backends = [&self.network, &self.tap, &self.bridge];
        if backends.iter().filter(|backend| backend.is_some()).count() != 1 {
            return Err("give exactly one of `network`, `tap` and `bridge`".into());
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
        } else if self.ip.is_some() || !self.forwards.is_empty() {
            return Err(
                "`ip` and `forwards` need the nic on a corral network (`network = \"NAME\"`)"
                    .into(),
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

    /// The VMM's view of the nic: a tap, or a new tap on `bridge` (for a nic on a network, the
    /// network's bridge), with `mac`.
    pub fn vmm_config(&self, bridge: Option<String>, mac: MacAddress) -> NicConfig {
        NicConfig {
            tap: self.tap.clone(),
            bridge: bridge.or_else(|| self.bridge.clone()),
            mac: Some(mac),
        }
    }
}

impl FromStr for Nic {
    type Err = String;

    /// `network=NAME[,ip=ADDRESS][,forward=tcp:8080:80...]`, `tap=NAME` or `bridge=NAME`, each
    /// optionally with `,mac=MAC`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use network=NAME[,ip=10.0.3.10][,forward=tcp:8080:80], tap=NAME or \
                     bridge=NAME, optionally with ,mac=52:54:00:12:34:56";
        let mut nic = Nic::default();
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "network" if !value.is_empty() => nic.network = Some(value.to_owned()),
                "tap" if !value.is_empty() => nic.tap = Some(value.to_owned()),
                "bridge" if !value.is_empty() => nic.bridge = Some(value.to_owned()),
                "mac" => nic.mac = Some(value.parse().map_err(|err| format!("{err}"))?),
                "ip" => {
                    nic.ip = Some(value.parse().map_err(|_| {
                        format!(
                            "invalid nic address {value:?}: give an IPv4 address, like 10.0.3.10"
                        )
                    })?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_on_a_network_parses_with_its_address_and_forwards() {
        let nic: Nic = "network=lab,ip=10.0.3.10,forward=tcp:8080:80,forward=udp:5353:53"
            .parse()
            .unwrap();
        assert_eq!(nic.network.as_deref(), Some("lab"));
        assert_eq!(nic.ip, Some(Ipv4Addr::new(10, 0, 3, 10)));
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
            ("tap=t0,bridge=br0", "exactly one of"),
            ("", "exactly one of"),
            (
                "bridge=br0,ip=10.0.3.10",
                "need the nic on a corral network",
            ),
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
        let bridged: Nic = "bridge=br0,mac=52:54:00:12:34:56".parse().unwrap();
        let config = bridged.vmm_config(None, bridged.mac.unwrap());
        assert_eq!(config.bridge.as_deref(), Some("br0"));
    }
}
