//! The link helpers against the kernel, inside a network namespace of the test's own.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use corral_net::link;
use corral_net::NetnsPath;
use corral_testkit::{require_program, require_root};

/// A persistent network namespace bound to a file, removed on drop.
struct Namespace {
    _dir: tempfile::TempDir,
    path: NetnsPath,
}

impl Namespace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("net");
        std::fs::write(&file, "").unwrap();
        let mut option = std::ffi::OsString::from("--net=");
        option.push(&file);
        let status = Command::new("unshare")
            .arg(option)
            .arg("true")
            .status()
            .unwrap();
        assert!(status.success());
        Self {
            _dir: dir,
            path: NetnsPath(file),
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_veth_end_moves_into_a_namespace_with_its_address_and_route() {
    require_root!();
    require_program!("ip");
    require_program!("unshare");
    // The test's own namespace holds the host end too: nothing touches the machine's links.
    let host = Namespace::new();
    let inner = Namespace::new();
    let h = Some(&host.path);
    link::ip(
        h,
        &[
            "link", "add", "name", "tcorral0", "type", "veth", "peer", "name", "tcorral1",
        ],
    )
    .unwrap();
    link::ip(
        h,
        &[
            "link",
            "set",
            "dev",
            "tcorral1",
            "netns",
            inner.path.0.to_str().unwrap(),
            "name",
            "eth0",
        ],
    )
    .unwrap();
    assert!(link::find(h, "tcorral1").unwrap().is_none());
    let inside = Some(&inner.path);
    link::set_mac(inside, "eth0", "52:54:00:12:34:56").unwrap();
    link::set_up(inside, "eth0").unwrap();
    link::add_address(inside, "eth0", IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)), 24).unwrap();
    link::set_default_route(inside, IpAddr::V4(Ipv4Addr::new(10, 9, 8, 1))).unwrap();
    let eth0 = link::find(inside, "eth0").unwrap().expect("eth0 inside");
    assert_eq!(eth0.address.as_deref(), Some("52:54:00:12:34:56"));
    let routes = link::ip(inside, &["route", "show", "default"]).unwrap();
    assert!(routes.contains("via 10.9.8.1 dev eth0"), "{routes}");
}

#[test]
fn hostile_interface_names_are_refused_before_ip_runs() {
    for name in ["", "-help", "a-name-far-too-long", "eth0; reboot", "a/b"] {
        let err = link::validate_interface_name(name).unwrap_err();
        assert!(err.to_string().contains("interface name"), "{err}");
    }
    link::validate_interface_name("corralbr0").unwrap();
}
