//! Instances on a managed network, end to end: the network's DHCP and DNS service gives
//! application containers their addresses and names, a system container's and a VM's own DHCP
//! clients leases, and goes with the network; an instance made without nics joins the default
//! network. corral runs in a network namespace of the test's own, which has no route out:
//! nothing touches the machine's links or nftables, no packet leaves.

mod common;

use std::time::Duration;

use common::CorralRoot;
use corral_testkit::{require_kvm, require_program, require_root, Netns};

/// The processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn containers_on_a_managed_network_get_addresses_names_and_leases_from_its_service() {
    require_root!();
    for program in ["ip", "nft", "dnsmasq", "unshare", "nsenter"] {
        require_program!(program);
    }
    if !common::have_busybox() {
        return;
    }
    let netns = Netns::new("netinst");
    netns.ip(&["link", "set", "lo", "up"]);
    let root = CorralRoot::in_netns(&netns);
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    std::fs::create_dir_all(rootfs.join("sbin")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", rootfs.join("sbin/init")).unwrap();
    root.ok(&[
        "network",
        "create",
        "lab",
        "--subnet",
        "10.0.9.1/24",
        "--dhcp-range",
        "10.0.9.100-10.0.9.150",
        "--domain",
        "lab.test",
    ]);
    let service = root.path().join("networks/lab/service");
    assert!(
        !processes_naming(service.to_str().unwrap()).is_empty(),
        "no DHCP/DNS service runs for the network"
    );

    let serve = "mkdir -p /www && hostname > /www/who && exec httpd -f -p 8080 -h /www";
    for name in ["c1", "c2"] {
        root.ok(&[
            "create",
            name,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--nic",
            "network=lab",
            "--",
            "/bin/sh",
            "-c",
            serve,
        ]);
        root.ok(&["start", name]);
    }
    let nic = |name: &str| root.info(name)["nics"][0].clone();
    let address = |name: &str| nic(name)["ip"].as_str().unwrap().to_owned();
    let (a1, a2) = (address("c1"), address("c2"));
    assert_ne!(a1, a2);
    for a in [&a1, &a2] {
        let last: u8 = a.strip_prefix("10.0.9.").unwrap().parse().unwrap();
        assert!((100..=150).contains(&last), "{a} is outside the DHCP range");
    }
    assert_eq!(nic("c1")["ip_source"], "run");
    let eth0 = root.ok(&["exec", "c1", "--", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(eth0.contains(&format!("{a1}/24")), "{eth0}");
    let route = root.ok(&["exec", "c1", "--", "ip", "route", "show", "default"]);
    assert!(route.contains("via 10.0.9.1"), "{route}");
    let resolv = root.ok(&["exec", "c2", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.0.9.1"), "{resolv}");

    // c2 finds c1 by name through the network's DNS server, and reaches it.
    let lookup = root.ok(&["exec", "c2", "--", "nslookup", "c1.lab.test", "10.0.9.1"]);
    assert!(lookup.contains(&a1), "{lookup}");
    let page = root.ok(&[
        "exec",
        "c2",
        "--",
        "wget",
        "-q",
        "-O",
        "-",
        "http://c1.lab.test:8080/who",
    ]);
    assert_eq!(page.trim(), "c1");
    let err = root.fails(&["network", "delete", "lab"]);
    assert!(err.contains("c1") && err.contains("c2"), "{err}");
    // A third with c1's MAC on the same network is refused at start, naming both.
    let c1_mac = nic("c1")["mac"].as_str().unwrap().to_owned();
    root.ok(&[
        "create",
        "twin",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        &format!("network=lab,mac={c1_mac}"),
        "--",
        "sleep",
        "600",
    ]);
    let err = root.fails(&["start", "twin"]);
    assert!(
        err.contains(&format!(
            "MAC {c1_mac} on network lab, which instance c1 has too"
        )),
        "{err}"
    );
    assert_eq!(root.status("twin"), "stopped");
    root.ok(&["delete", "twin"]);

    // A stopped container's address and name are free again.
    root.ok(&["kill", "c1"]);
    let gone = root.run(&["exec", "c2", "--", "nslookup", "c1.lab.test", "10.0.9.1"]);
    assert!(
        !gone.status.success(),
        "c1's name outlived its run: {gone:?}"
    );

    // A system container's own DHCP client gets a lease for its MAC.
    root.ok(&[
        "create",
        "sys",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--init",
        "--nic",
        "network=lab",
    ]);
    root.ok(&["start", "sys"]);
    root.ok(&[
        "exec",
        "sys",
        "--",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "5",
        "-s",
        "/bin/true",
    ]);
    common::wait_for("the lease", Duration::from_secs(10), || {
        nic("sys")["ip_source"] == "lease"
    });
    let leased = address("sys");
    assert!(leased.starts_with("10.0.9.1"), "{leased}");
    assert_ne!(leased, a2);
    // `network info` lists the service's leases and the running containers' reservations.
    let shown: serde_json::Value =
        serde_json::from_str(&root.ok(&["network", "info", "lab", "-o", "json"])).unwrap();
    let status = &shown["service"];
    assert_eq!(status["running"], true, "{shown}");
    let sys_mac = nic("sys")["mac"].clone();
    assert!(
        status["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|lease| lease["mac"] == sys_mac && lease["ip"] == leased.as_str()),
        "{shown}"
    );
    let reserved: Vec<&str> = status["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["hostname"].as_str())
        .collect();
    assert_eq!(reserved, ["c2"], "{shown}");

    // The network goes whole once nothing uses it: no service, bridge, rules or files.
    for name in ["c1", "c2", "sys"] {
        root.ok(&["delete", name, "--force"]);
    }
    root.ok(&["network", "delete", "lab"]);
    assert!(processes_naming(service.to_str().unwrap()).is_empty());
    assert!(!root.path().join("networks/lab").exists());
    assert!(!netns.ip(&["-o", "link", "show"]).contains("corral-lab"));
}

#[test]
fn an_instance_made_without_nics_joins_the_default_network_made_on_first_use() {
    require_root!();
    for program in ["ip", "nft", "dnsmasq", "unshare", "nsenter"] {
        require_program!(program);
    }
    if !common::have_busybox() {
        return;
    }
    let netns = Netns::new("netdefault");
    netns.ip(&["link", "set", "lo", "up"]);
    // The first subnet corral would choose is routed here already.
    netns.ip(&["route", "add", "blackhole", "10.0.3.0/24"]);
    let root = CorralRoot::in_netns(&netns);
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    let create = |name: &str, default_network: Option<&str>| {
        let mut command = root.command(&[
            "create",
            name,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sleep",
            "600",
        ]);
        match default_network {
            Some(network) => command.env("CORRAL_DEFAULT_NETWORK", network),
            None => command.env_remove("CORRAL_DEFAULT_NETWORK"),
        };
        let out = common::output_via_files(&mut command);
        assert!(out.status.success(), "{out:?}");
    };
    create("box", None);
    let network: serde_json::Value =
        serde_json::from_str(&root.ok(&["network", "info", "default", "-o", "json"])).unwrap();
    assert_eq!(network["ipv4"], "10.0.4.1/24", "{network}");
    assert_eq!(network["service"]["running"], true, "{network}");
    root.ok(&["start", "box"]);
    let nic = &root.info("box")["nics"][0];
    assert_eq!(nic["network"], "default", "{nic}");
    assert!(nic["ip"].as_str().unwrap().starts_with("10.0.4."), "{nic}");
    // A second one joins the same network; `none` and an unknown name are honoured.
    create("box2", None);
    assert_eq!(
        root.info("box2")["definition"]["nics"][0]["network"],
        "default"
    );
    create("loner", Some("none"));
    assert!(root.info("loner")["definition"]["nics"].is_null());
    let mut command = root.command(&["create", "stray", "--rootfs", rootfs.to_str().unwrap()]);
    command.env("CORRAL_DEFAULT_NETWORK", "nowhere");
    let out = common::output_via_files(&mut command);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("network nowhere does not exist"),
        "{err}"
    );
    assert!(root.run(&["info", "stray"]).status.code() != Some(0));

    // The quickstart's path: the busybox image's init asks DHCP for its nic on `default`, and
    // the network's DNS learns its name.
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/busybox.toml");
    let out_dir = root.dir.path().join("image-out");
    root.ok(&[
        "image",
        "build",
        spec.to_str().unwrap(),
        "--var",
        &format!("out={}", out_dir.display()),
    ]);
    let mut command = root.command(&["create", "demo", "--image", "busybox"]);
    command.env_remove("CORRAL_DEFAULT_NETWORK");
    assert!(common::output_via_files(&mut command).status.success());
    root.ok(&["start", "demo"]);
    common::wait_for("demo's lease", Duration::from_secs(30), || {
        root.info("demo")["nics"][0]["ip_source"] == "lease"
    });
    let leased = root.info("demo")["nics"][0]["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    let inside = root.ok(&[
        "exec", "demo", "--", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert!(inside.contains(&format!("{leased}/24")), "{inside}");
    let lookup = root.run(&["exec", "box", "--", "nslookup", "demo.corral", "10.0.4.1"]);
    assert!(
        String::from_utf8_lossy(&lookup.stdout).contains(&leased),
        "{lookup:?} {}",
        root.ok(&["network", "info", "default", "-o", "json"])
    );

    for name in ["box", "box2", "loner", "demo"] {
        root.ok(&["delete", name, "--force"]);
    }
    root.ok(&["network", "delete", "default"]);
}

#[test]
fn a_vm_on_a_managed_network_leases_an_address_and_pings_a_container_there() {
    require_root!();
    require_kvm!();
    for program in ["ip", "nft", "dnsmasq", "unshare", "nsenter"] {
        require_program!(program);
    }
    if !common::have_busybox() {
        return;
    }
    let netns = Netns::new("netvm");
    netns.ip(&["link", "set", "lo", "up"]);
    let root = CorralRoot::in_netns(&netns);
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    root.ok(&[
        "network",
        "create",
        "lab",
        "--subnet",
        "10.0.8.1/24",
        "--dhcp-range",
        "10.0.8.100-10.0.8.150",
    ]);
    // An application container answers pings by its kernel.
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        "network=lab",
        "--",
        "/bin/sleep",
        "600",
    ]);
    root.ok(&["start", "box"]);
    let target = root.info("box")["nics"][0]["ip"]
        .as_str()
        .unwrap()
        .to_owned();

    // The guest leases its address from the network's service, then pings the container.
    let peer = format!("peer_ip={target}");
    common::create_vm(
        &root,
        "vm",
        "virtio-net-dhcp",
        &["--nic", "network=lab", "--cmdline", &peer],
    );
    root.ok(&["start", "vm"]);
    common::wait_for("the guest to finish", Duration::from_secs(120), || {
        root.status("vm") == "stopped"
    });
    let console = root.ok(&["logs", "vm"]);
    let leased = console
        .lines()
        .find_map(|line| line.strip_prefix("dhcp: leased "))
        .unwrap_or_else(|| panic!("the guest got no lease: {console}"))
        .trim()
        .to_owned();
    let last: u8 = leased
        .strip_prefix("10.0.8.")
        .and_then(|host| host.parse().ok())
        .unwrap_or_else(|| panic!("{leased} is not on the network"));
    assert!(
        (100..=150).contains(&last),
        "{leased} is outside the DHCP range"
    );
    assert_ne!(leased, target);
    assert!(
        console.contains(&format!("ping: reply from {target}")),
        "{console}"
    );
    assert_eq!(root.info("vm")["state"]["last_exit"]["code"], 0);

    // corral sees the lease the guest holds: in the VM's nic and in the network's leases.
    let nic = |name: &str| root.info(name)["nics"][0].clone();
    common::wait_for("the lease to be recorded", Duration::from_secs(10), || {
        nic("vm")["ip_source"] == "lease"
    });
    assert_eq!(nic("vm")["ip"], leased.as_str());
    let shown: serde_json::Value =
        serde_json::from_str(&root.ok(&["network", "info", "lab", "-o", "json"])).unwrap();
    let mac = nic("vm")["mac"].clone();
    assert!(
        shown["service"]["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|lease| lease["mac"] == mac && lease["ip"] == leased.as_str()),
        "{shown}"
    );

    for name in ["box", "vm"] {
        root.ok(&["delete", name, "--force"]);
    }
    root.ok(&["network", "delete", "lab"]);
    assert!(!netns.ip(&["-o", "link", "show"]).contains("corral-lab"));
}
