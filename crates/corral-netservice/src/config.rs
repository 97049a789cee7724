//! What one network's service serves ([`ServiceConfig`]), its validation, and [`write_config`],
//! which turns it into the files of the state directory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::paths::StatePaths;
use crate::{hosts, render, user};

/// dnsmasq's shortest lease.
const MIN_LEASE_SECS: u32 = 120;

/// The DHCP and DNS service of one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The network's name, for messages.
    pub network: String,
    /// The bridge the service listens on (it must exist, with `gateway` on it, before the
    /// service starts).
    pub bridge: String,
    /// The bridge's IPv4 address: the clients' router and DNS server.
    pub gateway: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
    /// The first and last address DHCP hands out dynamically.
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
    pub lease_secs: u32,
    /// The DNS domain of the network's instances (`NAME.DOMAIN`); answered locally, never
    /// forwarded.
    pub domain: String,
    /// Where other names are resolved; empty means the host's `/etc/resolv.conf`.
    #[serde(default)]
    pub upstreams: Vec<IpAddr>,
    /// Router advertisements (SLAAC) on an IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Config>,
    /// Fixed addresses and names by MAC address.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
}

/// The bridge's IPv6 address; its /64 is announced for SLAAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv6Config {
    pub gateway: Ipv6Addr,
    pub prefix_len: u8,
}

/// A client that always gets `ipv4` and is known in DNS as `hostname`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    pub ipv4: Ipv4Addr,
    /// One DNS label.
    pub hostname: String,
}

impl ServiceConfig {
    /// The refusal, if any, of a setting that dnsmasq would reject or that would serve clients
    /// wrongly.
    pub fn validate(&self) -> Result<(), Error> {
        self.problem().map_or(Ok(()), |problem| {
            Err(Error::Invalid {
                network: self.network.clone(),
                problem,
            })
        })
    }

    fn problem(&self) -> Option<String> {
        if !is_interface_name(&self.bridge) {
            return Some(format!("{:?} is not a network interface name", self.bridge));
        }
        if !(8..=30).contains(&self.prefix_len) {
            return Some(format!(
                "the IPv4 prefix /{} leaves no room for clients; use /8 to /30",
                self.prefix_len
            ));
        }
        let subnet = Subnet::new(self.gateway, self.prefix_len);
        if !subnet.holds_host(self.gateway) {
            return Some(format!(
                "the gateway {} is the subnet's network or broadcast address",
                self.gateway
            ));
        }
        for (name, address) in [("start", self.dhcp_start), ("end", self.dhcp_end)] {
            if !subnet.holds_host(address) || address == self.gateway {
                return Some(format!(
                    "the DHCP range {name} {address} is not a client address of {}/{}",
                    self.gateway, self.prefix_len
                ));
            }
        }
        if self.dhcp_start > self.dhcp_end {
            return Some(format!(
                "the DHCP range starts ({}) after it ends ({})",
                self.dhcp_start, self.dhcp_end
            ));
        }
        if self.lease_secs < MIN_LEASE_SECS {
            return Some(format!(
                "a lease of {} s is shorter than dnsmasq's shortest, {MIN_LEASE_SECS} s",
                self.lease_secs
            ));
        }
        if !is_domain(&self.domain) {
            return Some(format!("{:?} is not a DNS domain", self.domain));
        }
        if let Some(ipv6) = self.ipv6 {
            if ipv6.prefix_len != 64 {
                return Some(format!(
                    "SLAAC needs a /64 IPv6 subnet, not /{}",
                    ipv6.prefix_len
                ));
            }
        }
        reservation_problem(&self.reservations, &subnet, self.gateway)
    }

    /// Reads the configuration [`write_config`] stored in `state_dir`.
    pub(crate) fn load(paths: &StatePaths) -> Result<ServiceConfig, Error> {
        let path = paths.service();
        let text = std::fs::read(&path).map_err(Error::io("read", &path))?;
        serde_json::from_slice(&text).map_err(|source| Error::Corrupt { path, source })
    }

    /// Stores the configuration as `service.json`.
    pub(crate) fn store(&self, paths: &StatePaths) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        corral_host::atomic::write_file(
            &paths.service(),
            &json,
            corral_host::atomic::PRIVATE_FILE_MODE,
        )?;
        Ok(())
    }
}

fn reservation_problem(
    reservations: &[Reservation],
    subnet: &Subnet,
    gateway: Ipv4Addr,
) -> Option<String> {
    for (index, reservation) in reservations.iter().enumerate() {
        if !is_mac(&reservation.mac) {
            return Some(format!(
                "the reservation MAC {:?} is not a MAC address (aa:bb:cc:dd:ee:ff)",
                reservation.mac
            ));
        }
        if !subnet.holds_host(reservation.ipv4) || reservation.ipv4 == gateway {
            return Some(format!(
                "the reserved address {} is not a client address of the subnet",
                reservation.ipv4
            ));
        }
        if !is_label(&reservation.hostname) {
            return Some(format!(
                "the reserved name {:?} is not a host name (letters, digits and '-')",
                reservation.hostname
            ));
        }
        let earlier = &reservations[..index];
        if earlier
            .iter()
            .any(|r| r.mac.eq_ignore_ascii_case(&reservation.mac))
        {
            return Some(format!("the MAC {} is reserved twice", reservation.mac));
        }
        if earlier.iter().any(|r| r.ipv4 == reservation.ipv4) {
            return Some(format!(
                "the address {} is reserved twice",
                reservation.ipv4
            ));
        }
        if earlier
            .iter()
            .any(|r| r.hostname.eq_ignore_ascii_case(&reservation.hostname))
        {
            return Some(format!(
                "the name {} is reserved twice",
                reservation.hostname
            ));
        }
    }
    None
}

/// An IPv4 subnet.
struct Subnet {
    network: u32,
    mask: u32,
}

impl Subnet {
    fn new(address: Ipv4Addr, prefix_len: u8) -> Subnet {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Subnet {
            network: u32::from(address) & mask,
            mask,
        }
    }

    /// True for an address of the subnet that is neither its network nor broadcast address.
    fn holds_host(&self, address: Ipv4Addr) -> bool {
        let address = u32::from(address);
        address & self.mask == self.network
            && address != self.network
            && address != self.network | !self.mask
    }
}

/// The subnet mask of a prefix length, as dnsmasq's `dhcp-range` wants it.
pub(crate) fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(Subnet::new(Ipv4Addr::UNSPECIFIED, prefix_len).mask)
}

fn is_interface_name(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// One DNS label: letters, digits and inner hyphens.
pub(crate) fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_domain(domain: &str) -> bool {
    domain.len() <= 253 && domain.split('.').all(is_label)
}

/// `aa:bb:cc:dd:ee:ff`, either case.
pub(crate) fn is_mac(mac: &str) -> bool {
    let octets: Vec<&str> = mac.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Validates `config` and writes every file of the service into `state_dir` (created if
/// missing): the configuration, dnsmasq's, the reservation files and the lease hook. A running
/// service reads the new dnsmasq configuration when it restarts dnsmasq; reservations alone
/// change at once through [`crate::set_reservations`].
pub fn write_config(state_dir: &Path, config: &ServiceConfig) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    config.validate()?;
    let paths = StatePaths::new(state_dir);
    // dnsmasq re-reads the reservation files after dropping its privileges, so the directory is
    // searchable by everyone; the files with secrets in them (leases, control) stay private.
    std::fs::create_dir_all(state_dir).map_err(Error::io("create", state_dir))?;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(Error::io("set the mode of", state_dir))?;
    let user = user::ServiceUser::find();
    user.check_reachable(state_dir)?;
    config.store(&paths)?;
    hosts::write_files(&paths, config)?;
    corral_host::atomic::write_file(
        &paths.dnsmasq_conf(),
        render::dnsmasq_conf(config, &paths, &user).as_bytes(),
        corral_host::atomic::PRIVATE_FILE_MODE,
    )?;
    corral_host::atomic::write_file(&paths.lease_hook(), render::LEASE_HOOK.as_bytes(), 0o700)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ServiceConfig {
        ServiceConfig {
            network: "default".into(),
            bridge: "corralbr0".into(),
            gateway: Ipv4Addr::new(10, 0, 3, 1),
            prefix_len: 24,
            dhcp_start: Ipv4Addr::new(10, 0, 3, 100),
            dhcp_end: Ipv4Addr::new(10, 0, 3, 200),
            lease_secs: 3600,
            domain: "corral".into(),
            upstreams: vec![],
            ipv6: None,
            reservations: vec![Reservation {
                mac: "52:54:00:12:34:56".into(),
                ipv4: Ipv4Addr::new(10, 0, 3, 10),
                hostname: "web".into(),
            }],
        }
    }

    fn problem_with(change: impl FnOnce(&mut ServiceConfig)) -> String {
        let mut config = sample();
        change(&mut config);
        config.problem().expect("refused")
    }

    #[test]
    fn a_sound_configuration_passes() {
        assert_eq!(sample().problem(), None);
    }

    #[test]
    fn each_bad_setting_is_refused_by_name() {
        assert!(problem_with(|c| c.bridge = "br0; rm".into()).contains("interface name"));
        assert!(problem_with(|c| c.prefix_len = 31).contains("/31"));
        assert!(problem_with(|c| c.dhcp_end = Ipv4Addr::new(10, 0, 4, 5)).contains("end"));
        assert!(problem_with(|c| c.dhcp_start = c.gateway).contains("start"));
        assert!(problem_with(|c| c.dhcp_start = Ipv4Addr::new(10, 0, 3, 250)).contains("after"));
        assert!(problem_with(|c| c.lease_secs = 60).contains("shortest"));
        assert!(problem_with(|c| c.domain = "bad domain".into()).contains("domain"));
        assert!(problem_with(|c| c.ipv6 = Some(Ipv6Config {
            gateway: "fd00::1".parse().unwrap(),
            prefix_len: 48
        }))
        .contains("/64"));
    }

    #[test]
    fn bad_or_clashing_reservations_are_refused() {
        let twin = |change: fn(&mut Reservation)| {
            problem_with(|c| {
                let mut other = Reservation {
                    mac: "52:54:00:00:00:01".into(),
                    ipv4: Ipv4Addr::new(10, 0, 3, 11),
                    hostname: "db".into(),
                };
                change(&mut other);
                c.reservations.push(other);
            })
        };
        assert!(twin(|r| r.mac = "52:54:00:12:34:56".to_uppercase()).contains("MAC"));
        assert!(twin(|r| r.ipv4 = Ipv4Addr::new(10, 0, 3, 10)).contains("address"));
        assert!(twin(|r| r.hostname = "WEB".into()).contains("name"));
        assert!(twin(|r| r.mac = "52:54:00:00:00".into()).contains("not a MAC"));
        assert!(twin(|r| r.ipv4 = Ipv4Addr::new(10, 0, 3, 255)).contains("client address"));
        assert!(twin(|r| r.hostname = "a b\n".into()).contains("host name"));
    }

    #[test]
    fn netmasks_follow_the_prefix() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(8), Ipv4Addr::new(255, 0, 0, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
    }
}
