//! `network.toml`: what a network is (its bridge, subnet, NAT, DHCP range, DNS domain),
//! parsed and validated on its own and against the other networks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cidr::{Ipv4Cidr, Ipv6Cidr};
use crate::link::{validate_interface_name, LinkError, MAX_INTERFACE_NAME};

/// The longest network name.
pub const MAX_NAME_LEN: usize = 63;
/// The DNS domain of a network that names none.
pub const DEFAULT_DOMAIN: &str = "corral";
/// What a managed network's bridge is called: the prefix and the network's name when that fits.
pub const BRIDGE_PREFIX: &str = "corral-";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// corral owns the bridge: it creates it with the gateway address, NAT and DHCP/DNS.
    #[default]
    Managed,
    /// An existing bridge (one bridged to the physical network, say): corral only adds ports.
    Unmanaged,
}

/// A DHCP pool, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DhcpRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a DHCP range: write FIRST-LAST, like 10.0.3.2-10.0.3.254")]
pub struct DhcpRangeError(String);

impl FromStr for DhcpRange {
    type Err = DhcpRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || DhcpRangeError(text.to_owned());
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        Ok(Self {
            start: start.trim().parse().map_err(|_| invalid())?,
            end: end.trim().parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for DhcpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl TryFrom<String> for DhcpRange {
    type Error = DhcpRangeError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DhcpRange> for String {
    fn from(range: DhcpRange) -> String {
        range.to_string()
    }
}

/// A network, as `networks/NAME/network.toml` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDefinition {
    pub name: String,
    #[serde(default)]
    pub kind: NetworkKind,
    /// The Linux bridge: made by corral for a managed network, an existing one otherwise.
    pub bridge: String,
    /// A managed network's gateway address on the bridge and its subnet's prefix
    /// (`10.0.3.1/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Cidr>,
    /// Masquerade the subnet's traffic leaving the host through any other interface.
    #[serde(default = "nat_default")]
    pub nat: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_range: Option<DhcpRange>,
    #[serde(default = "domain_default")]
    pub domain: String,
    /// A managed network's IPv6 gateway address and prefix (`fd42:1:2::1/64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Cidr>,
    /// Where the network's DNS server forwards names it does not know; empty: the host's
    /// resolvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<IpAddr>,
}

fn nat_default() -> bool {
    true
}

fn domain_default() -> String {
    DEFAULT_DOMAIN.to_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error(
        "{0:?} is not a usable network name: 1 to 63 letters, digits, '-' or '_', starting \
         with a letter or digit"
    )]
    Name(String),
    #[error("network {network}: {problem}")]
    Invalid { network: String, problem: String },
    #[error("network {network}: its bridge name is not usable")]
    Bridge {
        network: String,
        #[source]
        source: LinkError,
    },
    #[error(
        "network {network}'s subnet {subnet} overlaps network {other}'s {other_subnet}; choose \
         another subnet, or leave it out and corral picks a free one"
    )]
    Overlap {
        network: String,
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("network {other} already uses bridge {bridge}; name another bridge")]
    BridgeTaken { bridge: String, other: String },
    #[error("cannot read {path}")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// Checks a network name: the rules of instance names, without '.' (it also names a directory
/// and, in a bridge name, an interface).
pub fn validate_name(name: &str) -> Result<(), DefinitionError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::Name(name.to_owned()))
    }
}

/// The bridge name a managed network gets when it names none: `corral-NAME` when that fits in
/// an interface name, else `corralbrN` with the first N no name in `taken` has.
pub fn derived_bridge_name(name: &str, taken: &[String]) -> String {
    let preferred = format!("{BRIDGE_PREFIX}{name}");
    if preferred.len() <= MAX_INTERFACE_NAME && !taken.contains(&preferred) {
        return preferred;
    }
    (0..)
        .map(|n| format!("corralbr{n}"))
        .find(|candidate| !taken.contains(candidate))
        .expect("an unbounded range has a free name")
}

impl NetworkDefinition {
    /// The DHCP pool: the one given, else every host address of the subnet on the larger side of
    /// the gateway (`.2`–`.254` for `.1/24`). `None` for a network without a subnet.
    pub fn effective_dhcp_range(&self) -> Option<DhcpRange> {
        if let Some(range) = self.dhcp_range {
            return Some(range);
        }
        let cidr = self.ipv4?;
        let first = u32::from(cidr.network()) + 1;
        let last = u32::from(cidr.broadcast()).checked_sub(1)?;
        let gateway = u32::from(cidr.address);
        let (start, end) = if gateway - first >= last - gateway {
            (first, gateway - 1)
        } else {
            (gateway + 1, last)
        };
        (start <= end).then(|| DhcpRange {
            start: start.into(),
            end: end.into(),
        })
    }

    /// Checks the definition on its own.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        validate_name(&self.name)?;
        let invalid = |problem: String| DefinitionError::Invalid {
            network: self.name.clone(),
            problem,
        };
        validate_interface_name(&self.bridge).map_err(|source| DefinitionError::Bridge {
            network: self.name.clone(),
            source,
        })?;
        validate_domain(&self.domain).map_err(invalid)?;
        match self.kind {
            NetworkKind::Unmanaged => {
                let managed_only = [
                    (self.ipv4.is_some(), "ipv4"),
                    (self.ipv6.is_some(), "ipv6"),
                    (self.nat, "nat"),
                    (self.dhcp_range.is_some(), "dhcp_range"),
                ];
                if let Some((_, field)) = managed_only.iter().find(|(set, _)| *set) {
                    return Err(invalid(format!(
                        "`{field}` is for managed networks; an unmanaged network's bridge keeps \
                         the addressing of the network it is bridged to (remove `{field}`, and \
                         set nat = false)"
                    )));
                }
            }
            NetworkKind::Managed => self.validate_managed().map_err(invalid)?,
        }
        Ok(())
    }

    fn validate_managed(&self) -> Result<(), String> {
        let cidr = self
            .ipv4
            .ok_or("a managed network needs `ipv4`, its gateway address and prefix")?;
        if !(8..=30).contains(&cidr.prefix) {
            return Err(format!(
                "ipv4 {cidr}: the prefix must be 8 to 30 (a subnet with room for instances)"
            ));
        }
        if cidr.address == cidr.network() || cidr.address == cidr.broadcast() {
            return Err(format!(
                "ipv4 {cidr} is the subnet's network or broadcast address; give the gateway, \
                 such as {}/{}",
                Ipv4Addr::from(u32::from(cidr.network()) + 1),
                cidr.prefix
            ));
        }
        if !cidr.address.is_private() {
            return Err(format!(
                "ipv4 {cidr} is not in a private range (10/8, 172.16/12, 192.168/16); a NATed \
                 network must not shadow public addresses"
            ));
        }
        let range = self
            .effective_dhcp_range()
            .ok_or(format!("ipv4 {cidr} leaves no address for DHCP"))?;
        let inside = |ip| ip != cidr.network() && ip != cidr.broadcast() && cidr.contains(ip);
        if !inside(range.start) || !inside(range.end) || range.start > range.end {
            return Err(format!(
                "dhcp_range {range} must be host addresses of {}, first to last",
                cidr.subnet()
            ));
        }
        if (range.start..=range.end).contains(&cidr.address) {
            return Err(format!(
                "dhcp_range {range} holds the gateway {}; leave it out of the range",
                cidr.address
            ));
        }
        if let Some(v6) = self.ipv6 {
            if v6.prefix != 64 {
                return Err(format!(
                    "ipv6 {v6}: the prefix must be 64, the one SLAAC works with"
                ));
            }
            if v6.address == v6.subnet().address {
                return Err(format!(
                    "ipv6 {v6} is the subnet's own address; give the gateway, such as {}1/64",
                    v6.subnet().address
                ));
            }
        }
        Ok(())
    }

    /// Checks the definition against the other networks: no shared bridge, no overlapping
    /// subnet.
    pub fn validate_against(&self, others: &[NetworkDefinition]) -> Result<(), DefinitionError> {
        for other in others.iter().filter(|other| other.name != self.name) {
            if other.bridge == self.bridge {
                return Err(DefinitionError::BridgeTaken {
                    bridge: self.bridge.clone(),
                    other: other.name.clone(),
                });
            }
            let overlap = |subnet: String, other_subnet: String| DefinitionError::Overlap {
                network: self.name.clone(),
                subnet,
                other: other.name.clone(),
                other_subnet,
            };
            if let (Some(mine), Some(theirs)) = (self.ipv4, other.ipv4) {
                if mine.overlaps(theirs) {
                    return Err(overlap(
                        mine.subnet().to_string(),
                        theirs.subnet().to_string(),
                    ));
                }
            }
            if let (Some(mine), Some(theirs)) = (self.ipv6, other.ipv6) {
                if mine.overlaps(theirs) {
                    return Err(overlap(
                        mine.subnet().to_string(),
                        theirs.subnet().to_string(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Changes one setting (`nat`, `dhcp-range`, `domain`, `dns-upstream`) from its text; the
    /// caller validates the result.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), DefinitionError> {
        let invalid = |problem: String| DefinitionError::Invalid {
            network: self.name.clone(),
            problem,
        };
        match key {
            "nat" => {
                self.nat = value
                    .parse()
                    .map_err(|_| invalid(format!("nat={value}: write nat=true or nat=false")))?
            }
            "dhcp-range" | "dhcp_range" => {
                self.dhcp_range = if value.is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|err: DhcpRangeError| invalid(err.to_string()))?,
                    )
                }
            }
            "domain" => self.domain = value.to_owned(),
            "dns-upstream" | "dns_upstream" => {
                self.dns_upstream = parse_addresses(value).map_err(invalid)?
            }
            "name" | "kind" | "bridge" | "ipv4" | "subnet" | "ipv6" => {
                return Err(invalid(format!(
                    "`{key}` cannot change on an existing network; create a new network (and \
                     delete this one)"
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "there is no setting `{key}`; set nat, dhcp-range, domain or dns-upstream"
                )))
            }
        }
        Ok(())
    }
}

/// Parses `IP,IP,...` (empty: none).
pub fn parse_addresses(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.trim()
                .parse()
                .map_err(|_| format!("{part:?} is not an IP address, like 192.0.2.53"))
        })
        .collect()
}

/// A DNS domain: dot-separated labels of letters, digits and '-', none starting or ending with
/// '-'.
fn validate_domain(domain: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.len() <= 253 && domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "domain {domain:?} is not a DNS domain: labels of letters, digits and '-' separated \
             by dots, like corral or lab.example"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(name: &str, ipv4: &str) -> NetworkDefinition {
        NetworkDefinition {
            name: name.to_owned(),
            kind: NetworkKind::Managed,
            bridge: derived_bridge_name(name, &[]),
            ipv4: Some(ipv4.parse().unwrap()),
            nat: true,
            dhcp_range: None,
            domain: DEFAULT_DOMAIN.to_owned(),
            ipv6: None,
            dns_upstream: vec![],
        }
    }

    #[test]
    fn the_default_dhcp_range_is_the_subnet_without_the_gateway() {
        let range = managed("a", "10.0.3.1/24").effective_dhcp_range().unwrap();
        assert_eq!(range.to_string(), "10.0.3.2-10.0.3.254");
        let range = managed("a", "10.0.3.254/24")
            .effective_dhcp_range()
            .unwrap();
        assert_eq!(range.to_string(), "10.0.3.1-10.0.3.253");
        let range = managed("a", "10.8.0.1/16").effective_dhcp_range().unwrap();
        assert_eq!(range.to_string(), "10.8.0.2-10.8.255.254");
    }

    #[test]
    fn a_definition_round_trips_through_toml_and_rejects_unknown_fields() {
        let mut network = managed("lab", "10.0.3.1/24");
        network.ipv6 = Some("fd42:1:2::1/64".parse().unwrap());
        network.dns_upstream = vec!["192.0.2.53".parse().unwrap()];
        network.validate().unwrap();
        let text = toml::to_string(&network).unwrap();
        assert!(text.contains("ipv4 = \"10.0.3.1/24\""), "{text}");
        assert_eq!(toml::from_str::<NetworkDefinition>(&text).unwrap(), network);
        let err = toml::from_str::<NetworkDefinition>(&format!("{text}\ncolour = 1")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn bad_definitions_say_what_to_fix() {
        type Change = Box<dyn Fn(&mut NetworkDefinition)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|n| n.ipv4 = Some("10.0.3.0/24".parse().unwrap())),
                "network or broadcast",
            ),
            (
                Box::new(|n| n.ipv4 = Some("8.8.8.1/24".parse().unwrap())),
                "private range",
            ),
            (
                Box::new(|n| n.ipv4 = Some("10.0.3.1/31".parse().unwrap())),
                "8 to 30",
            ),
            (
                Box::new(|n| n.dhcp_range = Some("10.0.4.2-10.0.4.9".parse().unwrap())),
                "host addresses of 10.0.3.0/24",
            ),
            (
                Box::new(|n| n.dhcp_range = Some("10.0.3.1-10.0.3.9".parse().unwrap())),
                "holds the gateway",
            ),
            (
                Box::new(|n| n.dhcp_range = Some("10.0.3.9-10.0.3.2".parse().unwrap())),
                "first to last",
            ),
            (
                Box::new(|n| n.domain = "bad_domain".into()),
                "not a DNS domain",
            ),
            (
                Box::new(|n| n.bridge = "a-bridge-name-too-long".into()),
                "interface name",
            ),
            (
                Box::new(|n| n.ipv6 = Some("fd42::1/48".parse().unwrap())),
                "must be 64",
            ),
            (
                Box::new(|n| n.kind = NetworkKind::Unmanaged),
                "for managed networks",
            ),
            (Box::new(|n| n.name = "-x".into()), "network name"),
        ];
        for (change, expected) in cases {
            let mut network = managed("lab", "10.0.3.1/24");
            change(&mut network);
            let err = corral_host::error_chain(&network.validate().unwrap_err());
            assert!(err.contains(expected), "{err} (expected {expected:?})");
        }
    }

    #[test]
    fn overlapping_subnets_and_shared_bridges_are_refused() {
        let a = managed("a", "10.0.3.1/24");
        let err = managed("b", "10.0.0.1/16")
            .validate_against(std::slice::from_ref(&a))
            .unwrap_err();
        assert!(
            err.to_string().contains("overlaps network a's 10.0.3.0/24"),
            "{err}"
        );
        let mut c = managed("c", "10.0.4.1/24");
        c.validate_against(std::slice::from_ref(&a)).unwrap();
        c.bridge = a.bridge.clone();
        let err = c.validate_against(&[a]).unwrap_err();
        assert!(
            err.to_string().contains("already uses bridge corral-a"),
            "{err}"
        );
    }

    #[test]
    fn bridge_names_fit_an_interface_name() {
        assert_eq!(derived_bridge_name("default", &[]), "corral-default");
        assert_eq!(derived_bridge_name("a-long-network", &[]), "corralbr0");
        assert_eq!(
            derived_bridge_name("a-long-network", &["corralbr0".into()]),
            "corralbr1"
        );
    }

    #[test]
    fn settings_change_by_key_and_fixed_ones_refuse() {
        let mut network = managed("lab", "10.0.3.1/24");
        network.set("nat", "false").unwrap();
        network.set("dhcp-range", "10.0.3.100-10.0.3.200").unwrap();
        network
            .set("dns-upstream", "192.0.2.53,2001:db8::53")
            .unwrap();
        network.validate().unwrap();
        assert!(!network.nat);
        assert_eq!(network.dns_upstream.len(), 2);
        let err = network.set("ipv4", "10.0.9.1/24").unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
        let err = network.set("colour", "red").unwrap_err();
        assert!(err.to_string().contains("no setting `colour`"), "{err}");
    }
}
