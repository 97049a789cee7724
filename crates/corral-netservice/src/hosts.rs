//! The reservation files dnsmasq re-reads on SIGHUP: `dhcp-hosts` (MAC to address and name) and
//! `hosts` (name to address, so a reserved instance resolves before its first lease).

use std::fmt::Write;
use std::path::Path;

use crate::config::{Reservation, ServiceConfig};
use crate::error::Error;
use crate::paths::StatePaths;

/// The mode of the files dnsmasq reads after dropping its privileges.
const READABLE_MODE: u32 = 0o644;

fn dhcp_hosts(reservations: &[Reservation]) -> String {
    reservations.iter().fold(String::new(), |mut text, r| {
        let _ = writeln!(
            text,
            "{},{},{}",
            r.mac.to_ascii_lowercase(),
            r.ipv4,
            r.hostname
        );
        text
    })
}

fn hosts(reservations: &[Reservation], domain: &str) -> String {
    reservations.iter().fold(String::new(), |mut text, r| {
        let _ = writeln!(text, "{} {}.{domain} {}", r.ipv4, r.hostname, r.hostname);
        text
    })
}

/// Writes both reservation files of `config`, each replaced atomically.
pub(crate) fn write_files(paths: &StatePaths, config: &ServiceConfig) -> Result<(), Error> {
    corral_host::atomic::write_file(
        &paths.dhcp_hosts(),
        dhcp_hosts(&config.reservations).as_bytes(),
        READABLE_MODE,
    )?;
    corral_host::atomic::write_file(
        &paths.hosts(),
        hosts(&config.reservations, &config.domain).as_bytes(),
        READABLE_MODE,
    )?;
    Ok(())
}

/// Replaces the network's reservations (in `service.json` and the reservation files) and, when
/// the service runs, has dnsmasq re-read them at once.
pub fn set_reservations(state_dir: &Path, reservations: &[Reservation]) -> Result<(), Error> {
    let paths = StatePaths::new(state_dir);
    let mut config = ServiceConfig::load(&paths)?;
    config.reservations = reservations.to_vec();
    config.validate()?;
    config.store(&paths)?;
    write_files(&paths, &config)?;
    crate::spawn::reload(&paths)
}

/// The network's reservations.
pub fn reservations(state_dir: &Path) -> Result<Vec<Reservation>, Error> {
    Ok(ServiceConfig::load(&StatePaths::new(state_dir))?.reservations)
}

/// Changes the network's reservations with `change`, holding the service's reservation lock (so
/// two instances starting at once each see the other's), then has a running dnsmasq re-read
/// them. `change` gets the current leases too, to pick an address no client holds.
pub fn update_reservations<T>(
    state_dir: &Path,
    change: impl FnOnce(&mut Vec<Reservation>, &[crate::Lease]) -> T,
) -> Result<T, Error> {
    let paths = StatePaths::new(state_dir);
    let _lock = crate::leases::lock_file(&paths.dir().join("reservations.lock"))?;
    let mut reservations = reservations(state_dir)?;
    let leases = crate::leases(state_dir)?;
    let result = change(&mut reservations, &leases);
    set_reservations(state_dir, &reservations)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample;

    #[test]
    fn reservations_become_dhcp_hosts_and_qualified_names() {
        let mut config = sample();
        config.reservations[0].mac = "52:54:00:AB:CD:EF".into();
        assert_eq!(
            dhcp_hosts(&config.reservations),
            "52:54:00:ab:cd:ef,10.0.3.10,web\n"
        );
        assert_eq!(
            hosts(&config.reservations, &config.domain),
            "10.0.3.10 web.corral web\n"
        );
        assert_eq!(dhcp_hosts(&[]), "");
    }
}
