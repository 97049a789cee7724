//! Networks against the kernel: every test builds its own small internet of network namespaces
//! (a `host` where corral acts, a `wan` playing the outside world on a documentation address,
//! clients on the bridge), so nothing touches the machine's links, routes or nftables, and no
//! packet can leave the machine.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use corral_net::forward::PortForward;
use corral_net::networks::{NetworkRequest, DEFAULT_NETWORK};
use corral_net::{NetworkError, Networks};
use corral_testkit::{require_program, require_root, Netns};

/// Runs `f` on a thread that entered `netns`: what it spawns (`ip`, `nft`) and the sockets it
/// opens live there, while the test's other threads stay where they were.
fn inside<T: Send>(netns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{}", netns.name())).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn nft_tables(netns: &Netns) -> String {
    let output = netns
        .command("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn nft_table(netns: &Netns) -> String {
    let output = netns
        .command("nft")
        .args(["list", "table", "inet", "corral"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

fn request(name: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.to_owned(),
        ..NetworkRequest::default()
    }
}

#[test]
fn a_network_is_made_whole_refused_cleanly_and_deleted_without_a_trace() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    let host = Netns::new("netdef-life");
    host.ip(&["link", "set", "lo", "up"]);
    // The first subnet corral would pick is routed already: it must pick another.
    host.ip(&["route", "add", "blackhole", "10.0.3.0/24"]);
    let dir = tempfile::tempdir().unwrap();
    let networks = Networks::new(dir.path().join("networks"));

    let default = inside(&host, || networks.create(&request("default"))).unwrap();
    assert_eq!(default.bridge, "corral-default");
    let gateway = default.ipv4.unwrap();
    assert_eq!(gateway.to_string(), "10.0.4.1/24");
    let addresses = host.ip(&["-4", "address", "show", "dev", "corral-default"]);
    assert!(addresses.contains("inet 10.0.4.1/24"), "{addresses}");
    assert!(
        nft_table(&host).contains("ip saddr 10.0.4.0/24 oifname != \"corral-default\" masquerade"),
        "{}",
        nft_table(&host)
    );
    let forwarding = host
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1");
    assert_eq!(networks.get("default").unwrap(), default);

    let links_before = host.ip(&["-o", "link", "show"]);
    let table_before = nft_table(&host);
    let refusals: [(NetworkRequest, &str); 4] = [
        (
            NetworkRequest {
                subnet: Some("10.0.4.1/16".parse().unwrap()),
                ..request("overlap")
            },
            "overlaps network default's 10.0.4.0/24",
        ),
        (
            NetworkRequest {
                subnet: Some("10.0.3.1/24".parse().unwrap()),
                ..request("routed")
            },
            "already routed on the host (10.0.3.0/24)",
        ),
        (
            NetworkRequest {
                bridge: Some("corral-default".into()),
                ..request("samebridge")
            },
            "network default already uses bridge corral-default",
        ),
        (
            NetworkRequest {
                bridge: Some("nosuchbr".into()),
                unmanaged: true,
                ..request("lan")
            },
            "bridge nosuchbr of unmanaged network lan does not exist",
        ),
    ];
    for (request, expected) in refusals {
        let err = inside(&host, || networks.create(&request)).unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
        assert!(!dir.path().join("networks").join(&request.name).exists());
    }
    assert_eq!(host.ip(&["-o", "link", "show"]), links_before);
    assert_eq!(nft_table(&host), table_before);

    let lab = inside(&host, || networks.create(&request("lab"))).unwrap();
    assert_eq!(lab.ipv4.unwrap().to_string(), "10.0.5.1/24");
    let names: Vec<String> = networks
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["default", "lab"]);
    let info = inside(&host, || networks.info("lab")).unwrap();
    assert!(info.bridge_state.is_some(), "{info:?}");

    let err = inside(&host, || networks.delete("lab", &["web".to_owned()])).unwrap_err();
    assert!(
        err.to_string().contains("network lab is used by web"),
        "{err}"
    );
    assert!(host.ip(&["-o", "link", "show"]).contains("corral-lab"));
    assert!(matches!(
        inside(&host, || networks.delete("nothere", &[])),
        Err(NetworkError::NotFound(_))
    ));

    let six = inside(&host, || {
        networks.create(&NetworkRequest {
            ipv6: Some("fd42:1:2::1/64".parse().unwrap()),
            ..request("six")
        })
    })
    .unwrap();
    let addresses = host.ip(&["-6", "address", "show", "dev", &six.bridge]);
    assert!(addresses.contains("inet6 fd42:1:2::1/64"), "{addresses}");
    assert!(
        nft_table(&host).contains("ip6 saddr fd42:1:2::/64 oifname != \"corral-six\" masquerade"),
        "{}",
        nft_table(&host)
    );
    let err = inside(&host, || {
        networks.create(&NetworkRequest {
            ipv6: Some("fd42:1:2::9/64".parse().unwrap()),
            ..request("six2")
        })
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("overlaps network six's fd42:1:2::/64"),
        "{err}"
    );
    inside(&host, || networks.delete("six", &[])).unwrap();

    inside(&host, || networks.delete("lab", &[])).unwrap();
    inside(&host, || networks.delete(DEFAULT_NETWORK, &[])).unwrap();
    let links = host.ip(&["-o", "link", "show"]);
    assert!(!links.contains("corral-"), "{links}");
    assert!(
        !nft_tables(&host).contains("corral"),
        "{}",
        nft_tables(&host)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("networks"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != ".lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A TCP server that answers every connection with the address it came from.
fn serve_peer_address(netns: &Netns, address: SocketAddr) {
    let listener = inside(netns, || TcpListener::bind(address)).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let peer = stream.peer_addr().map(|peer| peer.ip().to_string());
            let _ = stream.write_all(peer.unwrap_or_default().as_bytes());
        }
    });
}

/// The address the server at `address` saw this connection come from, or the error.
fn seen_from(netns: &Netns, address: SocketAddr) -> std::io::Result<String> {
    inside(netns, || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut seen = String::new();
        stream.read_to_string(&mut seen)?;
        Ok(seen)
    })
}

/// A client namespace with `eth0` = `address`/24 on `bridge` of `host`, default route through
/// `gateway`.
fn client(host: &Netns, tag: &str, bridge: &str, address: &str, gateway: Ipv4Addr) -> Netns {
    let host_end = format!("v{tag}");
    let client = host.client_on_bridge(tag, &host_end[..host_end.len().min(15)], bridge);
    client.ip(&["address", "add", &format!("{address}/24"), "dev", "eth0"]);
    client.ip(&["route", "add", "default", "via", &gateway.to_string()]);
    client
}

#[test]
fn nat_and_port_forwards_reach_through_the_host() {
    require_root!();
    require_program!("ip");
    require_program!("nft");
    require_program!("nsenter");
    let host = Netns::new("netdef-host");
    host.ip(&["link", "set", "lo", "up"]);
    let wan = host.wan("netdef-wan");
    host.ip(&["route", "add", "default", "via", "198.51.100.1"]);
    // The outside knows the way to the network but must not be let in except by a forward.
    wan.ip(&["route", "add", "10.0.3.0/24", "via", "198.51.100.2"]);
    // The host namespace's only way out is the test's own `wan`.
    let routes = host.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 198.51.100.1 dev wan0"),
        "{routes}"
    );
    assert_eq!(
        routes.lines().filter(|r| r.starts_with("default")).count(),
        1
    );

    let dir = tempfile::tempdir().unwrap();
    let networks = Networks::new(dir.path().join("networks"));
    let network = inside(&host, || {
        networks.create(&NetworkRequest {
            subnet: Some("10.0.3.1/24".parse().unwrap()),
            ..request("nat")
        })
    })
    .unwrap();
    let gateway = network.ipv4.unwrap().address;
    let c1 = client(&host, "netdef-c1", &network.bridge, "10.0.3.10", gateway);
    let c2 = client(&host, "netdef-c2", &network.bridge, "10.0.3.11", gateway);

    let responder: SocketAddr = "198.51.100.1:7000".parse().unwrap();
    serve_peer_address(&wan, responder);
    assert_eq!(seen_from(&c1, responder).unwrap(), "198.51.100.2");

    let server: SocketAddr = "10.0.3.10:80".parse().unwrap();
    serve_peer_address(&c1, server);
    assert!(
        seen_from(&wan, server).is_err(),
        "the outside reached an instance behind NAT without a forward"
    );
    let forward: PortForward = "tcp:8080:80".parse().unwrap();
    inside(&host, || {
        networks.set_forwards("nat", "c1/0", "10.0.3.10".parse().unwrap(), &[forward])
    })
    .unwrap();
    let public: SocketAddr = "198.51.100.2:8080".parse().unwrap();
    assert_eq!(seen_from(&wan, public).unwrap(), "198.51.100.1");
    assert_eq!(seen_from(&host, public).unwrap(), "198.51.100.2");
    let through_gateway: SocketAddr = "10.0.3.1:8080".parse().unwrap();
    assert_eq!(seen_from(&host, through_gateway).unwrap(), "10.0.3.1");
    // Hairpin: the answer comes back through the host, so the host is the source c1 sees.
    assert_eq!(seen_from(&c2, public).unwrap(), "10.0.3.1");

    let err = inside(&host, || {
        networks.set_forwards("nat", "c2/0", "10.0.3.11".parse().unwrap(), &[forward])
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("tcp:8080:80: it is already forwarded to c1/0"),
        "{err}"
    );
    let _taken = inside(&host, || TcpListener::bind("0.0.0.0:9090")).unwrap();
    let err = inside(&host, || {
        networks.set_forwards(
            "nat",
            "c2/0",
            "10.0.3.11".parse().unwrap(),
            &["tcp:9090:80".parse().unwrap()],
        )
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("in use by a program on the host"),
        "{err}"
    );
    let err = inside(&host, || {
        networks.set_forwards("nat", "c2/0", "10.9.9.9".parse().unwrap(), &[])
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("outside network nat's subnet"),
        "{err}"
    );

    inside(&host, || networks.clear_forwards("c1/0")).unwrap();
    assert!(seen_from(&wan, public).is_err());
    assert!(
        !nft_table(&host).contains("dnat ip to"),
        "{}",
        nft_table(&host)
    );

    // After a reboot the bridge and the table are gone; restore brings both back.
    host.ip(&["link", "delete", &network.bridge]);
    let status = host
        .command("nft")
        .args(["delete", "table", "inet", "corral"])
        .status()
        .unwrap();
    assert!(status.success());
    inside(&host, || networks.restore()).unwrap();
    host.ip(&["link", "set", "vnetdef-c1", "master", &network.bridge]);
    assert_eq!(seen_from(&c1, responder).unwrap(), "198.51.100.2");
}
