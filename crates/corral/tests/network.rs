//! `corral network` and nics on networks, the binary run inside a network namespace of the
//! test's own: nothing touches the machine's links, routes or nftables.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{corral_bin, output_via_files, CorralRoot};
use corral_testkit::{require_kvm, require_program, require_root, Netns};
use serde_json::Value;

/// A corral root whose commands run in `netns`.
struct NetRoot {
    root: CorralRoot,
    netns: Netns,
}

impl NetRoot {
    fn new(tag: &str) -> NetRoot {
        let netns = Netns::new(tag);
        netns.ip(&["link", "set", "lo", "up"]);
        NetRoot {
            root: CorralRoot::new(),
            netns,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.netns.command(corral_bin());
        command
            .env("CORRAL_ROOT", self.root.path())
            .env("CORRAL_DEFAULT_NETWORK", "none")
            .args(args);
        output_via_files(&mut command)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "corral {args:?}: {out:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn links(&self) -> String {
        self.netns.ip(&["-o", "link", "show"])
    }

    fn nft(&self) -> String {
        let out = self
            .netns
            .command("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn networks_are_created_listed_changed_and_deleted_whole() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    let net = NetRoot::new("netcli-life");
    // corral must not pick a subnet the host already routes.
    net.netns.ip(&["route", "add", "blackhole", "10.0.3.0/24"]);

    let created = net.ok(&["network", "create", "lab", "--domain", "lab.test"]);
    assert!(
        created.contains("bridge corral-lab, 10.0.4.1/24, NAT"),
        "{created}"
    );
    assert!(net.links().contains("corral-lab"));
    assert!(
        net.nft()
            .contains("ip saddr 10.0.4.0/24 oifname != \"corral-lab\" masquerade"),
        "{}",
        net.nft()
    );
    let list = net.json(&["network", "list", "-o", "json"]);
    assert_eq!(list[0]["name"], "lab");
    assert_eq!(list[0]["dhcp_range"], "10.0.4.2-10.0.4.254");
    let info = net.json(&["network", "info", "lab", "-o", "json"]);
    assert_eq!(info["domain"], "lab.test");
    assert!(info["bridge_state"].is_string(), "{info}");
    let table = net.ok(&["network", "list"]);
    assert!(
        table.contains("lab   managed  corral-lab  10.0.4.1/24  yes"),
        "{table}"
    );

    let links = net.links();
    let ruleset = net.nft();
    for (args, expected) in [
        (
            &["network", "create", "routed", "--subnet", "10.0.3.1/24"][..],
            "subnet 10.0.3.0/24 of network routed is already routed on the host",
        ),
        (
            &["network", "create", "wide", "--subnet", "10.0.0.1/8"],
            "overlaps network lab's 10.0.4.0/24",
        ),
        (&["network", "create", "lab"], "network lab already exists"),
        (
            &[
                "network",
                "create",
                "lan",
                "--unmanaged",
                "--bridge",
                "nosuchbr",
            ],
            "bridge nosuchbr of unmanaged network lan does not exist",
        ),
        (
            &["network", "info", "nowhere"],
            "network nowhere does not exist",
        ),
        (
            &["network", "delete", "nowhere"],
            "network nowhere does not exist",
        ),
        (
            &["network", "set", "lab", "ipv4=10.0.9.1/24"],
            "`ipv4` cannot change on an existing network",
        ),
        (
            &["network", "set", "lab", "dhcp-range=10.0.5.2-10.0.5.9"],
            "must be host addresses of 10.0.4.0/24",
        ),
    ] {
        let err = net.fails(args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(net.links(), links, "a refused command changed the links");
    assert_eq!(net.nft(), ruleset, "a refused command changed the rules");
    let networks = net.root.path().join("networks");
    let mut names: Vec<_> = std::fs::read_dir(&networks)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".lock", "lab"]);

    net.ok(&[
        "network",
        "set",
        "lab",
        "nat=false",
        "dns-upstream=192.0.2.53",
    ]);
    assert!(
        !net.nft().contains("masquerade\n\t\tiifname"),
        "{}",
        net.nft()
    );
    assert!(!net.nft().contains("oifname != \"corral-lab\" masquerade"));
    let info = net.json(&["network", "info", "lab", "-o", "json"]);
    assert_eq!(info["nat"], false);
    assert_eq!(info["dns_upstream"][0], "192.0.2.53");

    // An existing bridge, used as it is and left in place.
    net.netns.ip(&["link", "add", "br-lan", "type", "bridge"]);
    net.ok(&[
        "network",
        "create",
        "lan",
        "--unmanaged",
        "--bridge",
        "br-lan",
    ]);
    net.ok(&["network", "delete", "lan"]);
    assert!(net.links().contains("br-lan"));

    net.ok(&["network", "delete", "lab"]);
    assert!(!net.links().contains("corral-"), "{}", net.links());
    assert!(!net.nft().contains("corral"), "{}", net.nft());
    assert!(!networks.join("lab").exists());
}

#[test]
fn a_vm_nic_names_a_network_which_cannot_go_while_the_vm_uses_it() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    let net = NetRoot::new("netcli-nic");
    let kernel = net.root.dir.path().join("kernel");
    std::fs::write(&kernel, b"").unwrap();
    let kernel = kernel.to_str().unwrap();
    net.ok(&["network", "create", "lab", "--subnet", "10.0.3.1/24"]);

    let err = net.fails(&[
        "create",
        "nowhere",
        "--kernel",
        kernel,
        "--nic",
        "network=nowhere",
    ]);
    assert!(err.contains("network nowhere does not exist"), "{err}");
    let err = net.fails(&[
        "create",
        "bad",
        "--kernel",
        kernel,
        "--nic",
        "network=lab,forward=tcp:80",
    ]);
    assert!(err.contains("like tcp:8080:80"), "{err}");
    net.ok(&[
        "create",
        "web",
        "--kernel",
        kernel,
        "--nic",
        "network=lab,ip=10.0.3.10,forward=tcp:8080:80",
    ]);
    let definition =
        std::fs::read_to_string(net.root.instance_dir("web").join("instance.toml")).unwrap();
    assert!(definition.contains("network = \"lab\""), "{definition}");
    assert!(
        definition.contains("forwards = [\"tcp:8080:80\"]"),
        "{definition}"
    );
    let info = net.ok(&["info", "web"]);
    assert!(
        info.contains("network lab (bridge corral-lab), mac 02:")
            && info.contains(", ip 10.0.3.10 (fixed), forwards tcp:8080:80"),
        "{info}"
    );
    // `list` shows the address without the guest (a defined VM that never ran).
    let list = net.ok(&["list", "--all"]);
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..4], ["NAME", "TYPE", "STATE", "IPV4"], "{list}");
    let row = list.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(row.contains(" 10.0.3.10 "), "{list}");
    let listed = net.json(&["list", "--all", "-o", "json"]);
    assert_eq!(
        listed[0]["ipv4"],
        serde_json::json!(["10.0.3.10"]),
        "{listed}"
    );

    let err = net.fails(&["network", "delete", "lab"]);
    assert!(err.contains("network lab is used by web"), "{err}");
    assert!(net.links().contains("corral-lab"));
    net.ok(&["delete", "web"]);
    net.ok(&["network", "delete", "lab"]);
    assert!(!net.links().contains("corral-lab"));
}

/// Waits until instance `name` of `net` reaches `status`.
fn wait_for_status(net: &NetRoot, name: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = net.json(&["info", name, "-o", "json"]);
        if info["state"]["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {status}: {info}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_vm_on_a_network_reaches_its_gateway_and_holds_its_forwards_while_it_runs() {
    require_root!();
    require_kvm!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    let net = NetRoot::new("netcli-vm");
    net.ok(&["network", "create", "lab", "--subnet", "10.0.3.1/24"]);
    let guest = |name: &str| corral_guests::elf(name).to_str().unwrap().to_owned();

    // The virtio-net test guest pings the gateway through a tap on the network's bridge.
    net.ok(&[
        "create",
        "pinger",
        "--kernel",
        &guest("virtio-net"),
        "--memory",
        "32M",
        "--nic",
        "network=lab",
        "--cmdline",
        "guest_ip=10.0.3.20 peer_ip=10.0.3.1",
    ]);
    net.ok(&["start", "pinger"]);
    wait_for_status(&net, "pinger", "stopped");
    let console = net.ok(&["logs", "pinger"]);
    assert!(
        console.contains("virtio-net: echo reply from the peer"),
        "{console}"
    );

    let forward = "network=lab,ip=10.0.3.10,forward=tcp:8080:80";
    net.ok(&[
        "create",
        "web",
        "--kernel",
        &guest("counter"),
        "--memory",
        "32M",
        "--nic",
        forward,
    ]);
    let other = "network=lab,ip=10.0.3.11,forward=tcp:8080:80";
    net.ok(&[
        "create",
        "web2",
        "--kernel",
        &guest("counter"),
        "--memory",
        "32M",
        "--nic",
        other,
    ]);
    net.ok(&["start", "web"]);
    assert!(
        net.nft().contains("dnat ip to 10.0.3.10:80"),
        "{}",
        net.nft()
    );
    let info = net.json(&["network", "info", "lab", "-o", "json"]);
    assert_eq!(info["ports"].as_array().unwrap().len(), 1, "{info}");
    assert_eq!(info["forwards"]["web/0"]["forwards"][0], "tcp:8080:80");

    let err = net.fails(&["start", "web2"]);
    assert!(
        err.contains("host port tcp:8080:80: it is already forwarded to web/0"),
        "{err}"
    );
    assert_eq!(
        net.json(&["info", "web2", "-o", "json"])["state"]["status"],
        "stopped"
    );

    net.ok(&["kill", "web"]);
    assert!(!net.nft().contains("dnat ip to"), "{}", net.nft());
    net.ok(&["start", "web2"]);
    assert!(
        net.nft().contains("dnat ip to 10.0.3.11:80"),
        "{}",
        net.nft()
    );
    net.ok(&["kill", "web2"]);
    assert!(!net.nft().contains("dnat ip to"), "{}", net.nft());
}
