//! `info`: facts about the guest, each best effort (a missing one is empty, never an error).

use std::collections::BTreeMap;
use std::net::IpAddr;

use corral_host::fsroot::FsRoot;
use nix::sys::socket::SockaddrStorage;

use crate::message::{Address, GuestInfo, Interface};

pub fn gather() -> GuestInfo {
    GuestInfo {
        hostname: nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        os: os_release(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        uptime_secs: uptime_secs().unwrap_or(0),
        machine_id: corral_host::machine_id::show(&FsRoot::new("/"))
            .ok()
            .map(|id| id.to_string()),
        interfaces: interfaces(),
    }
}

/// `PRETTY_NAME` from `/etc/os-release`, or `/usr/lib/os-release` (os-release(5)'s order).
fn os_release() -> Option<String> {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())?;
    pretty_name(&text)
}

fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|line| line.trim().strip_prefix("PRETTY_NAME="))?;
    let value = value.trim();
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    Some(unquoted.to_string())
}

fn uptime_secs() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(seconds as u64)
}

/// Every interface with an address, loopback included, in name order.
fn interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Vec<Address>> = BTreeMap::new();
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    for entry in addresses {
        let (Some(ip), Some(prefix)) = (
            entry.address.as_ref().and_then(ip_of),
            entry.netmask.as_ref().and_then(ip_of).map(prefix_len),
        ) else {
            continue;
        };
        by_name
            .entry(entry.interface_name)
            .or_default()
            .push(Address { ip, prefix });
    }
    by_name
        .into_iter()
        .map(|(name, addresses)| Interface { name, addresses })
        .collect()
}

fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

fn prefix_len(netmask: IpAddr) -> u8 {
    match netmask {
        IpAddr::V4(mask) => u32::from(mask).count_ones() as u8,
        IpAddr::V6(mask) => u128::from(mask).count_ones() as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_name_is_read_quoted_or_not() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            pretty_name("PRETTY_NAME=Alpine\n").as_deref(),
            Some("Alpine")
        );
        assert_eq!(pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn this_machine_has_loopback_with_its_address() {
        let info = gather();
        let lo = info.interfaces.iter().find(|i| i.name == "lo").unwrap();
        assert!(lo
            .addresses
            .iter()
            .any(|a| a.ip == IpAddr::from([127, 0, 0, 1]) && a.prefix == 8));
        assert!(!info.kernel.is_empty());
    }
}
