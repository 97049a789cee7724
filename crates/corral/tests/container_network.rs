//! Container nics end to end: the real `corral` runs inside a network namespace the test made,
//! with a bridge the test made there, so nothing touches the machine's links or nftables.
//! Needs root, iproute2, nftables, util-linux (unshare, nsenter) and busybox-static.

mod common;

use std::path::PathBuf;
use std::process::Command;

use corral_testkit::{require_program, require_root, Netns};
use serde_json::Value;

use common::CorralRoot as Root;

/// busybox httpd serving the instance's name at /who on port 8080.
const SERVE_NAME: &str = "mkdir -p /www && hostname > /www/who && exec httpd -f -p 8080 -h /www";

struct Lan {
    root: Root,
    // Dropped after the root: the instances are killed while their namespace still exists.
    net: Netns,
}

impl Lan {
    fn new(tag: &str) -> Option<Lan> {
        if !common::have_busybox() {
            return None;
        }
        let net = Netns::new(tag);
        net.ip(&["link", "add", "br0", "type", "bridge"]);
        net.ip(&["link", "set", "br0", "up"]);
        let root = Root::in_netns(&net);
        common::build_rootfs(&root.dir.path().join("busybox"));
        Some(Lan { root, net })
    }

    /// Creates application container `name` serving its name, with `nic` as its only nic.
    fn container(&self, name: &str, nic: &str) {
        let rootfs = self.root.dir.path().join("busybox");
        self.root.ok(&[
            "create",
            name,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--nic",
            nic,
            "--",
            "/bin/sh",
            "-c",
            SERVE_NAME,
        ]);
    }

    /// What `from` gets asking `address` who it is; `None` when nothing answers within 3 s.
    fn who(&self, from: &str, address: &str) -> Option<String> {
        let url = format!("http://{address}:8080/who");
        let out = self.root.run(&[
            "exec", from, "--", "timeout", "3", "wget", "-q", "-O", "-", &url,
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The nic `name` runs with, as `corral info` records it.
    fn nic(&self, name: &str) -> Value {
        self.root.info(name)["nics"][0].clone()
    }

    fn netns_file(&self, name: &str) -> PathBuf {
        self.root.instance_dir(name).join("run/netns")
    }

    /// Runs `ip ARGS` inside the container's network namespace, as a guest with CAP_NET_ADMIN
    /// could.
    fn ip_inside(&self, name: &str, args: &[&str]) {
        let mut option = std::ffi::OsString::from("--net=");
        option.push(self.netns_file(name));
        let status = Command::new("nsenter")
            .arg(option)
            .arg("ip")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "ip {args:?} in {name}");
    }

    fn has_link(&self, name: &str) -> bool {
        self.net
            .command("ip")
            .args(["link", "show", "dev", name])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// True when no veth, filter, namespace file or mount of instance `name` is left.
    fn left_nothing(&self, name: &str) -> bool {
        let links = self.net.ip(&["-o", "link", "show"]);
        let rules = self
            .net
            .command("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let netns = self.netns_file(name);
        !links.contains(": vc")
            && !links.contains(": vp")
            && !String::from_utf8_lossy(&rules.stdout).contains("chain nic-")
            && !netns.exists()
            && !mounts.contains(netns.to_str().unwrap())
    }

    fn has_filter(&self, interface: &str) -> bool {
        self.net
            .command("nft")
            .args([
                "list",
                "chain",
                "bridge",
                "corral",
                &format!("nic-{interface}"),
            ])
            .output()
            .unwrap()
            .status
            .success()
    }
}

#[test]
fn application_containers_on_a_bridge_reach_each_other_with_their_own_addresses_only() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("unshare");
    require_program!("nsenter");
    let Some(lan) = Lan::new("veth") else { return };
    lan.container(
        "c1",
        "bridge=br0,ip=10.0.3.10/24,gateway=10.0.3.1,dns=10.0.3.53",
    );
    lan.container("c2", "bridge=br0,ip=10.0.3.11/24");
    lan.container("c3", "bridge=br0,ip=10.0.3.12/24,filter=off");
    for name in ["c1", "c2", "c3"] {
        lan.root.ok(&["start", name]);
    }
    assert_eq!(lan.who("c1", "10.0.3.11").as_deref(), Some("c2"));
    assert_eq!(lan.who("c2", "10.0.3.10").as_deref(), Some("c1"));

    // eth0 has the nic's MAC; the host end is a port of the bridge, filtered.
    let nic = lan.nic("c1");
    let mac = nic["mac"].as_str().unwrap().to_owned();
    let eth0 = lan
        .root
        .ok(&["exec", "c1", "--", "ip", "link", "show", "eth0"]);
    assert!(eth0.contains(&format!("link/ether {mac} ")), "{eth0}");
    let host = nic["host_interface"].as_str().unwrap().to_owned();
    let link = lan.net.ip(&["-j", "link", "show", "dev", &host]);
    assert!(link.contains("\"master\":\"br0\""), "{link}");
    assert!(lan.has_filter(&host));
    let info = lan.root.ok(&["info", "c1"]);
    assert!(
        info.contains(&format!(
            "bridge br0, mac {mac}, host interface {host}, ip 10.0.3.10 (run)"
        )),
        "{info}"
    );

    // resolv.conf, hosts and hostname are corral's, bind-mounted over the image's.
    let resolv = lan
        .root
        .ok(&["exec", "c1", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "nameserver 10.0.3.53\n");
    let hosts = lan.root.ok(&["exec", "c1", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.0.3.10\tc1"), "{hosts}");
    let routes = lan.root.ok(&["exec", "c1", "--", "ip", "route"]);
    assert!(routes.contains("default via 10.0.3.1"), "{routes}");
    // The image's own file (here only the mount point) is left as it was.
    let image_resolv = lan.root.instance_dir("c1").join("rootfs/etc/resolv.conf");
    assert_eq!(
        std::fs::read_to_string(image_resolv).unwrap_or_default(),
        ""
    );

    // A forged MAC is dropped at the bridge; the real one works again.
    lan.ip_inside(
        "c1",
        &["link", "set", "eth0", "address", "02:00:00:00:00:66"],
    );
    assert_eq!(lan.who("c1", "10.0.3.11"), None, "a forged MAC got through");
    lan.ip_inside("c1", &["link", "set", "eth0", "address", &mac]);
    assert_eq!(lan.who("c1", "10.0.3.11").as_deref(), Some("c2"));

    // So is a forged source address.
    lan.ip_inside("c1", &["address", "flush", "dev", "eth0"]);
    lan.ip_inside("c1", &["address", "add", "10.0.3.99/24", "dev", "eth0"]);
    assert_eq!(
        lan.who("c1", "10.0.3.11"),
        None,
        "a forged address got through"
    );

    // Without the filter, the same forgeries pass.
    lan.ip_inside(
        "c3",
        &["link", "set", "eth0", "address", "02:00:00:00:00:77"],
    );
    lan.ip_inside("c3", &["address", "flush", "dev", "eth0"]);
    lan.ip_inside("c3", &["address", "add", "10.0.3.98/24", "dev", "eth0"]);
    assert_eq!(lan.who("c3", "10.0.3.11").as_deref(), Some("c2"));
    assert!(!lan.has_filter(lan.nic("c3")["host_interface"].as_str().unwrap()));

    // Stopping removes the host end, its filter and the namespace file.
    lan.root.ok(&["stop", "c1", "--timeout", "2"]);
    assert!(!lan.has_link(&host), "{host} outlived c1");
    assert!(!lan.has_filter(&host));
    assert!(!lan.netns_file("c1").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(lan.netns_file("c1").to_str().unwrap()));
    // ... and a second start makes them again, the same.
    lan.root.ok(&["start", "c1"]);
    assert_eq!(lan.nic("c1")["host_interface"], host.as_str());
    assert_eq!(lan.who("c1", "10.0.3.11").as_deref(), Some("c2"));
}

#[test]
fn a_container_whose_nic_cannot_be_made_does_not_start_and_leaves_nothing() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("unshare");
    require_program!("nsenter");
    let Some(lan) = Lan::new("vethfail") else {
        return;
    };
    // The second nic names a bridge that does not exist: the first was made by then.
    let rootfs = lan.root.dir.path().join("busybox");
    lan.root.ok(&[
        "create",
        "bad",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        "bridge=br0,ip=10.0.3.20/24",
        "--nic",
        "bridge=nosuchbr,ip=10.0.4.20/24",
        "--",
        "sleep",
        "60",
    ]);
    let err = lan.root.fails(&["start", "bad"]);
    assert!(
        err.contains("bridge nosuchbr, which does not exist"),
        "{err}"
    );
    assert_eq!(lan.root.status("bad"), "stopped");
    assert!(lan.left_nothing("bad"));

    // An application container's address needs its prefix: refused when defined.
    let err = lan.root.fails(&[
        "create",
        "noprefix",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        "bridge=br0,ip=10.0.3.22",
    ]);
    assert!(err.contains("write it like 10.0.3.22/24"), "{err}");

    // Nics made, then the container itself fails: they go too.
    lan.root.ok(&[
        "create",
        "noexec",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        "bridge=br0,ip=10.0.3.21/24",
        "--",
        "/no/such/program",
    ]);
    let err = lan.root.fails(&["start", "noexec"]);
    assert!(err.contains("/no/such/program"), "{err}");
    assert!(lan.left_nothing("noexec"));
}

#[test]
fn the_nics_of_a_killed_supervisor_are_removed_when_corral_notices() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("unshare");
    require_program!("nsenter");
    let Some(lan) = Lan::new("vethkill") else {
        return;
    };
    lan.container("lost", "bridge=br0,ip=10.0.3.40/24");
    lan.root.ok(&["start", "lost"]);
    let host = lan.nic("lost")["host_interface"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(lan.has_link(&host));
    let pid = lan.root.info("lost")["state"]["pid"].as_i64().unwrap();
    // SAFETY: kill(2) of the supervisor this test started, by its recorded pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    common::wait_for(
        "the supervisor to be found dead",
        std::time::Duration::from_secs(10),
        || lan.root.status("lost") == "crashed",
    );
    assert!(!lan.has_link(&host), "{host} outlived its supervisor");
    assert!(lan.left_nothing("lost"));
}

#[test]
fn a_container_without_nics_keeps_only_its_loopback() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("unshare");
    require_program!("nsenter");
    let Some(lan) = Lan::new("vethnone") else {
        return;
    };
    let rootfs = lan.root.dir.path().join("busybox");
    lan.root.ok(&[
        "create",
        "plain",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "sleep",
        "60",
    ]);
    lan.root.ok(&["start", "plain"]);
    let links = lan.root.ok(&["exec", "plain", "--", "ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.starts_with("1: lo:"), "{links}");
    assert!(!lan.netns_file("plain").exists());
    assert!(lan.root.info("plain")["nics"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn a_system_container_gets_its_links_unconfigured_and_keeps_them_across_a_reboot() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("unshare");
    require_program!("nsenter");
    let Some(lan) = Lan::new("vethsys") else {
        return;
    };
    let rootfs = lan.root.dir.path().join("busybox");
    std::fs::create_dir_all(rootfs.join("sbin")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", rootfs.join("sbin/init")).unwrap();
    lan.root.ok(&[
        "create",
        "sys",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--init",
        "--nic",
        "bridge=br0,ip=10.0.3.30/24,gateway=10.0.3.1,dns=10.0.3.1",
    ]);
    lan.root.ok(&["start", "sys"]);
    let host = lan.nic("sys")["host_interface"]
        .as_str()
        .unwrap()
        .to_owned();
    // Its init configures eth0 (DHCP), so corral set no address, and it may set one itself.
    let addresses = lan.root.ok(&[
        "exec", "sys", "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert_eq!(addresses, "", "corral configured a system container's eth0");
    lan.root.ok(&[
        "exec",
        "sys",
        "--",
        "ip",
        "addr",
        "add",
        "10.0.3.30/24",
        "dev",
        "eth0",
    ]);
    // Its own /etc is left alone.
    let resolv = lan.root.instance_dir("sys").join("rootfs/etc/resolv.conf");
    assert!(!resolv.exists());

    lan.root.ok(&["exec", "sys", "--", "/bin/reboot"]);
    common::wait_for("the reboot", std::time::Duration::from_secs(15), || {
        lan.root.info("sys")["live"]["restarts"].as_u64() == Some(1)
    });
    assert!(lan.has_link(&host), "a reboot keeps the nic");
    // In its own user namespace (a system container's default) the init gets a new network
    // namespace it owns at every boot, as a machine's reboot forgets its addresses.
    let addresses = lan.root.ok(&[
        "exec", "sys", "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert_eq!(addresses, "", "a reboot kept the address");

    // Powering off from inside removes the nic without any corral command.
    lan.root.ok(&["exec", "sys", "--", "/bin/poweroff"]);
    common::wait_for(
        "the nic and namespace to go",
        std::time::Duration::from_secs(15),
        || lan.left_nothing("sys"),
    );
    assert!(!lan.has_link(&host));
}
