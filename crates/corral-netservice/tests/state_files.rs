//! The state directory of a network's service, driven through the crate's API without a
//! running dnsmasq: configuration files, reservations and the lease hook. The service itself,
//! with real DHCP clients and DNS queries, is tested through the corral binary
//! (crates/corral/tests/network_service.rs), which the lease hook needs.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use corral_netservice::{Error, Lease, Reservation, ServiceConfig};

fn config() -> ServiceConfig {
    ServiceConfig {
        network: "lab".into(),
        bridge: "corralbr1".into(),
        gateway: Ipv4Addr::new(10, 0, 7, 1),
        prefix_len: 24,
        dhcp_start: Ipv4Addr::new(10, 0, 7, 100),
        dhcp_end: Ipv4Addr::new(10, 0, 7, 199),
        lease_secs: 600,
        domain: "lab.corral".into(),
        upstreams: vec![],
        ipv6: None,
        reservations: vec![Reservation {
            mac: "52:54:00:00:07:0A".into(),
            ipv4: Ipv4Addr::new(10, 0, 7, 10),
            hostname: "db".into(),
        }],
    }
}

/// A directory every user may search, like the network directories corral makes.
fn searchable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn hook(state: &Path, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut out = Vec::new();
    corral_netservice::run_lease_hook(state, &args, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn write_config_makes_every_file_with_the_mode_its_reader_needs() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    corral_netservice::write_config(&state, &config()).unwrap();
    assert_eq!(mode(&state), 0o755);
    // dnsmasq re-reads these after dropping its privileges.
    assert_eq!(mode(&state.join("dhcp-hosts")), 0o644);
    assert_eq!(mode(&state.join("hosts")), 0o644);
    // These are read by root only.
    assert_eq!(mode(&state.join("dnsmasq.conf")), 0o600);
    assert_eq!(mode(&state.join("service.json")), 0o600);
    assert_eq!(mode(&state.join("lease-hook")), 0o700);
    let dhcp_hosts = std::fs::read_to_string(state.join("dhcp-hosts")).unwrap();
    assert_eq!(dhcp_hosts, "52:54:00:00:07:0a,10.0.7.10,db\n");
    let hosts = std::fs::read_to_string(state.join("hosts")).unwrap();
    assert_eq!(hosts, "10.0.7.10 db.lab.corral db\n");
    let conf = std::fs::read_to_string(state.join("dnsmasq.conf")).unwrap();
    let hook_line = format!("dhcp-script={}", state.join("lease-hook").display());
    assert!(conf.lines().any(|l| l == hook_line), "{conf}");
    assert!(conf.lines().any(|l| l == "leasefile-ro"), "{conf}");
    // No lease before the first client.
    assert_eq!(corral_netservice::leases(&state).unwrap(), []);
    assert!(!corral_netservice::is_running(&state));
    corral_netservice::stop(&state).unwrap();
}

#[test]
fn a_bad_configuration_writes_nothing() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    let mut bad = config();
    bad.dhcp_end = Ipv4Addr::new(10, 0, 8, 1);
    let err = corral_netservice::write_config(&state, &bad).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("network lab"), "{err}");
    assert!(!state.exists());
}

#[test]
fn a_state_directory_dnsmasq_cannot_reach_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = corral_netservice::write_config(&dir.path().join("lab"), &config()).unwrap_err();
    let Error::Unreachable { dir: blocked, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(blocked, &std::fs::canonicalize(dir.path()).unwrap());
    assert!(err.to_string().contains("chmod o+x"), "{err}");
}

#[test]
fn reservations_are_replaced_atomically_and_validated() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    corral_netservice::write_config(&state, &config()).unwrap();
    let web = Reservation {
        mac: "52:54:00:00:07:0b".into(),
        ipv4: Ipv4Addr::new(10, 0, 7, 11),
        hostname: "web".into(),
    };
    corral_netservice::set_reservations(&state, std::slice::from_ref(&web)).unwrap();
    let hosts = std::fs::read_to_string(state.join("hosts")).unwrap();
    assert_eq!(hosts, "10.0.7.11 web.lab.corral web\n");
    let outside = Reservation {
        ipv4: Ipv4Addr::new(192, 168, 1, 5),
        ..web.clone()
    };
    let err = corral_netservice::set_reservations(&state, &[outside]).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(state.join("hosts")).unwrap(), hosts);
    assert_eq!(mode(&state.join("hosts")), 0o644);
}

#[test]
fn the_lease_hook_keeps_leases_json_and_gives_them_back_to_dnsmasq() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    corral_netservice::write_config(&state, &config()).unwrap();
    assert_eq!(hook(&state, &["init"]), "");
    hook(&state, &["add", "52:54:00:00:07:64", "10.0.7.100", "c1"]);
    hook(&state, &["add", "52:54:00:00:07:65", "10.0.7.101"]);
    hook(&state, &["old", "52:54:00:00:07:65", "10.0.7.101", "c2"]);
    // DHCPv6 and actions this hook does not know are ignored.
    hook(&state, &["add", "00:01:00:01", "fd00::5", "v6"]);
    hook(&state, &["tftp", "512", "10.0.7.100", "/srv/boot"]);
    assert_eq!(
        corral_netservice::leases(&state).unwrap(),
        [
            Lease {
                mac: "52:54:00:00:07:64".into(),
                ip: Ipv4Addr::new(10, 0, 7, 100),
                hostname: Some("c1".into()),
                expires: 0,
                client_id: None,
            },
            Lease {
                mac: "52:54:00:00:07:65".into(),
                ip: Ipv4Addr::new(10, 0, 7, 101),
                hostname: Some("c2".into()),
                expires: 0,
                client_id: None,
            },
        ]
    );
    assert_eq!(
        hook(&state, &["init"]),
        "0 52:54:00:00:07:64 10.0.7.100 c1 *\n0 52:54:00:00:07:65 10.0.7.101 c2 *\n"
    );
    hook(&state, &["del", "52:54:00:00:07:64", "10.0.7.100", "c1"]);
    let left = corral_netservice::leases(&state).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].ip, Ipv4Addr::new(10, 0, 7, 101));
    assert_eq!(mode(&state.join("leases.json")), 0o600);
}

#[test]
fn concurrent_hooks_lose_no_lease() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    corral_netservice::write_config(&state, &config()).unwrap();
    std::thread::scope(|scope| {
        for last in 100..116u8 {
            let state = &state;
            scope.spawn(move || {
                let mac = format!("52:54:00:00:08:{last:02x}");
                hook(state, &["add", &mac, &format!("10.0.7.{last}")]);
            });
        }
    });
    assert_eq!(corral_netservice::leases(&state).unwrap().len(), 16);
    // Every write went through a temp file that was renamed away.
    let litter: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
}

#[test]
fn a_corrupt_lease_database_is_an_error_not_an_empty_one() {
    let dir = searchable_tempdir();
    let state = dir.path().join("lab");
    corral_netservice::write_config(&state, &config()).unwrap();
    std::fs::write(state.join("leases.json"), "{\"leases\": [").unwrap();
    let err = corral_netservice::leases(&state).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let args = vec!["init".to_string()];
    assert!(corral_netservice::run_lease_hook(&state, &args, &mut Vec::new()).is_err());
}

#[test]
fn starting_without_a_configuration_names_the_missing_file() {
    let dir = searchable_tempdir();
    let err = corral_netservice::spawn_supervisor(Path::new("/bin/false"), dir.path()).unwrap_err();
    assert!(err.to_string().contains("service.json"), "{err}");
}
