//! A network's DHCP and DNS service (corral-netservice) through the corral binary, with real
//! clients, in network namespaces this test makes: `host` holds the bridge and the service,
//! `c1` and `c2` are clients on the bridge (busybox udhcpc and ISC dhclient), `wan` holds the
//! upstream resolver. The host namespace has no default route, so nothing can leave it.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_control::{Client, Request, Response};
use corral_netservice::{Ipv6Config, Reservation, ServiceConfig};
use corral_testkit::{require_program, require_root, Netns};
use nix::unistd::Pid;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
const DOMAIN: &str = "corral.test";
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
const C1_ASKS: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 123);
const C2_MAC: &str = "52:54:00:0c:00:02";
const C2_RESERVED: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 10);

/// Children ended by pid when the test ends, however it ends.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Processes {
    fn spawn(&mut self, mut command: Command) -> u32 {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
        let pid = child.id();
        self.0.push(child);
        pid
    }

    fn end(&mut self, pid: u32) {
        if let Some(index) = self.0.iter().position(|c| c.id() == pid) {
            let mut child = self.0.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops the service when the test ends early, showing its log.
struct Service<'a>(&'a Path);

impl Drop for Service<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.0.join("service.log")).unwrap_or_default();
            eprintln!("service.log:\n{log}");
        }
        let _ = corral_netservice::stop(self.0);
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The address a client script recorded last for `event` (lines `EVENT ADDRESS`).
fn recorded(file: &Path, event: &str) -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| line.split_once(' '))
        .find(|(e, _)| *e == event)
        .and_then(|(_, address)| address.trim().parse().ok())
}

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn dig(client: &Netns, args: &[&str]) -> String {
    let output = client
        .command("dig")
        .args(["+time=2", "+tries=1", &format!("@{GATEWAY}")])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `spawn_supervisor` from a thread inside `netns`: the supervisor inherits it.
fn spawn_in(netns: &Netns, state: &Path) -> Pid {
    let netns_file = File::open(format!("/run/netns/{}", netns.name())).unwrap();
    let state = state.to_path_buf();
    std::thread::spawn(move || {
        nix::sched::setns(netns_file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        corral_netservice::spawn_supervisor(Path::new(env!("CARGO_BIN_EXE_corral")), &state)
    })
    .join()
    .unwrap()
    .unwrap_or_else(|err| panic!("the service did not start: {err:?}"))
}

/// Processes whose command line names `needle` (the state directory).
fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The main dnsmasq process of the service in `state` (the child of its namespace's init).
fn dnsmasq_of(state: &Path) -> Pid {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let pid = wait_for("dnsmasq", Duration::from_secs(5), || {
        processes_naming(state).into_iter().find(|&pid| {
            comm(pid).trim() == "dnsmasq" && parent(pid).is_some_and(|p| comm(p).trim() == "sh")
        })
    });
    Pid::from_raw(pid as i32)
}

/// A client namespace on the host's bridge.
fn client(host: &Netns, tag: &str, port: &str) -> Netns {
    host.client_on_bridge(tag, port, "cbr0")
}

#[test]
fn clients_get_leases_names_resolve_and_leases_survive_a_killed_supervisor() {
    require_root!();
    for program in ["ip", "nsenter", "dnsmasq", "busybox", "dhclient", "dig"] {
        require_program!(program);
    }
    let work = tempfile::tempdir().unwrap();
    // dnsmasq, once unprivileged, re-reads the reservations from the state directory.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let state: PathBuf = work.path().join("network");
    let mut processes = Processes::default();

    // The small internet: host with the bridge, wan with the upstream resolver.
    let host = Netns::new("nshost");
    host.ip(&["link", "set", "lo", "up"]);
    host.ip(&["link", "add", "cbr0", "type", "bridge"]);
    host.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", "cbr0"]);
    host.ip(&["link", "set", "cbr0", "up"]);
    let wan = host.wan("nswan");
    wan.ip(&["addr", "add", &format!("{UPSTREAM}/24"), "dev", "eth0"]);
    assert!(
        !host.ip(&["route", "show"]).contains("default"),
        "the host namespace must have no way out"
    );
    let mut upstream = wan.command("dnsmasq");
    upstream.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--pid-file=",
        "--bind-interfaces",
        &format!("--listen-address={UPSTREAM}"),
        "--address=/example.test/198.51.100.7",
    ]);
    processes.spawn(upstream);

    let c1 = client(&host, "nsc1", "vc1");
    let c2 = client(&host, "nsc2", "vc2");
    c2.ip(&["link", "set", "eth0", "address", C2_MAC]);

    let config = ServiceConfig {
        network: "test".into(),
        bridge: "cbr0".into(),
        gateway: GATEWAY,
        prefix_len: 24,
        dhcp_start: Ipv4Addr::new(10, 203, 0, 100),
        dhcp_end: Ipv4Addr::new(10, 203, 0, 150),
        lease_secs: 3600,
        domain: DOMAIN.into(),
        upstreams: vec![UPSTREAM.into()],
        ipv6: None,
        reservations: vec![],
    };
    corral_netservice::write_config(&state, &config).unwrap();
    let first = spawn_in(&host, &state);
    let service = Service(&state);
    assert!(corral_netservice::is_running(&state));
    // A reservation made while the service runs is honoured at once.
    corral_netservice::set_reservations(
        &state,
        &[Reservation {
            mac: C2_MAC.into(),
            ipv4: C2_RESERVED,
            hostname: "c2".into(),
        }],
    )
    .unwrap();

    // c1: busybox udhcpc, staying in the foreground to renew on SIGUSR1.
    let c1_events = work.path().join("c1.events");
    let udhcpc_script = work.path().join("udhcpc.sh");
    script(
        &udhcpc_script,
        &format!(
            "case \"$1\" in\n\
             bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\"; echo \"$1 $ip\" >> {};;\n\
             esac\n",
            c1_events.display()
        ),
    );
    let udhcpc = |request: Ipv4Addr| {
        let mut command = c1.command("busybox");
        command.args(["udhcpc", "-i", "eth0", "-f", "-x", "hostname:c1", "-r"]);
        command
            .arg(request.to_string())
            .arg("-s")
            .arg(&udhcpc_script);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    };
    let c1_client = processes.spawn(udhcpc(C1_ASKS));
    let c1_address = wait_for("c1's lease", Duration::from_secs(20), || {
        recorded(&c1_events, "bound")
    });
    assert_eq!(
        c1_address, C1_ASKS,
        "a free address the client asks for is granted"
    );

    // c2: ISC dhclient, whose MAC has the reservation.
    let c2_events = work.path().join("c2.events");
    let dhclient_script = work.path().join("dhclient.sh");
    script(
        &dhclient_script,
        &format!(
            "case \"$reason\" in\n\
             BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\"; \
             echo \"$reason $new_ip_address\" >> {};;\n\
             esac\n",
            c2_events.display()
        ),
    );
    let dhclient_conf = work.path().join("dhclient.conf");
    std::fs::write(&dhclient_conf, "").unwrap();
    let mut dhclient = c2.command("dhclient");
    dhclient
        .args(["-d", "-4", "-sf"])
        .arg(&dhclient_script)
        .arg("-cf")
        .arg(&dhclient_conf)
        .arg("-lf")
        .arg(work.path().join("dhclient.leases"))
        .arg("-pf")
        .arg(work.path().join("dhclient.pid"))
        .arg("eth0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    processes.spawn(dhclient);
    let c2_address = wait_for("c2's lease", Duration::from_secs(30), || {
        recorded(&c2_events, "BOUND")
    });
    assert_eq!(
        c2_address, C2_RESERVED,
        "the reservation by MAC is honoured"
    );

    // Both leases are on record.
    let leases = corral_netservice::leases(&state).unwrap();
    let c1_lease = leases
        .iter()
        .find(|l| l.ip == c1_address)
        .unwrap_or_else(|| panic!("no lease of c1 in {leases:?}"));
    assert_eq!(c1_lease.hostname.as_deref(), Some("c1"));
    assert!(c1_lease.expires > 0);
    assert!(leases
        .iter()
        .any(|l| l.ip == C2_RESERVED && l.mac == C2_MAC));

    // Renewal keeps the address.
    nix::sys::signal::kill(
        Pid::from_raw(c1_client as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let renewed = wait_for("c1's renewal", Duration::from_secs(20), || {
        recorded(&c1_events, "renew")
    });
    assert_eq!(renewed, c1_address);

    // DNS, asked from c2: instance names (lease and reservation), reverse, NXDOMAIN inside the
    // domain, and a name only the upstream resolver knows.
    assert_eq!(
        dig(&c2, &["+short", &format!("c1.{DOMAIN}")]).trim(),
        c1_address.to_string()
    );
    assert_eq!(
        dig(&c2, &["+short", "-x", &c1_address.to_string()]).trim(),
        format!("c1.{DOMAIN}.")
    );
    assert_eq!(
        dig(&c2, &["+short", &format!("c2.{DOMAIN}")]).trim(),
        C2_RESERVED.to_string()
    );
    assert!(dig(&c2, &[&format!("nothere.{DOMAIN}")]).contains("status: NXDOMAIN"));
    assert_eq!(
        dig(&c2, &["+short", "www.example.test"]).trim(),
        "198.51.100.7"
    );

    // dnsmasq dying is the supervisor's business: it starts another, which knows the leases.
    let dnsmasq = dnsmasq_of(&state);
    nix::sys::signal::kill(dnsmasq, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for("dnsmasq's restart", Duration::from_secs(10), || {
        (dnsmasq_of(&state) != dnsmasq
            && dig(&c2, &["+short", &format!("c1.{DOMAIN}")]).trim() == c1_address.to_string())
        .then_some(())
    });
    let mut control = Client::connect(&state.join("control.sock"), Duration::from_secs(5)).unwrap();
    let Response::Info(info) = control.call(&Request::Info).unwrap() else {
        panic!("no info");
    };
    assert_eq!((info.kind.as_str(), info.restarts), ("network", 1));
    assert_eq!(info.pid as i32, first.as_raw());

    // kill -9 of the supervisor takes dnsmasq with it.
    let leases_before = std::fs::read(state.join("leases.json")).unwrap();
    nix::sys::signal::kill(first, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = nix::sys::wait::waitpid(first, None);
    wait_for(
        "dnsmasq to end with its supervisor",
        Duration::from_secs(5),
        || processes_naming(&state).is_empty().then_some(()),
    );
    assert!(!corral_netservice::is_running(&state));
    assert_eq!(
        std::fs::read(state.join("leases.json")).unwrap(),
        leases_before
    );

    // A new supervisor knows the leases before any client asks, and hands c1 its address again
    // when it asks for none.
    let second = spawn_in(&host, &state);
    assert_ne!(second, first);
    assert_eq!(
        dig(&c2, &["+short", &format!("c1.{DOMAIN}")]).trim(),
        c1_address.to_string()
    );
    processes.end(c1_client);
    std::fs::remove_file(&c1_events).unwrap();
    let mut again = c1.command("busybox");
    again
        .args(["udhcpc", "-i", "eth0", "-f", "-q", "-s"])
        .arg(&udhcpc_script)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    processes.spawn(again);
    let c1_again = wait_for(
        "c1's lease after the restart",
        Duration::from_secs(20),
        || recorded(&c1_events, "bound"),
    );
    assert_eq!(c1_again, c1_address);

    // Stopping leaves no process; the record says why it ended.
    corral_netservice::stop(&state).unwrap();
    drop(service);
    let _ = nix::sys::wait::waitpid(second, None);
    assert!(!corral_netservice::is_running(&state));
    assert!(processes_naming(&state).is_empty());
    assert!(!state.join("control.sock").exists());
    let exit = std::fs::read_to_string(state.join("exit.json")).unwrap();
    assert!(exit.contains("\"stopped\""), "{exit}");
    corral_netservice::remove(&state).unwrap();
    assert!(!state.exists());
}

#[test]
fn clients_on_an_ipv6_network_configure_themselves_from_router_advertisements() {
    require_root!();
    for program in ["ip", "nsenter", "dnsmasq"] {
        require_program!(program);
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let state = work.path().join("network");
    let host = Netns::new("ns6host");
    host.ip(&["link", "set", "lo", "up"]);
    host.ip(&["link", "add", "cbr0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.204.0.1/24", "dev", "cbr0"]);
    host.ip(&[
        "-6",
        "addr",
        "add",
        "fd42:0:0:6::1/64",
        "dev",
        "cbr0",
        "nodad",
    ]);
    host.ip(&["link", "set", "cbr0", "up"]);
    let c1 = client(&host, "ns6c1", "vc1");
    let config = ServiceConfig {
        network: "six".into(),
        bridge: "cbr0".into(),
        gateway: Ipv4Addr::new(10, 204, 0, 1),
        prefix_len: 24,
        dhcp_start: Ipv4Addr::new(10, 204, 0, 100),
        dhcp_end: Ipv4Addr::new(10, 204, 0, 150),
        lease_secs: 3600,
        domain: "six.test".into(),
        // Never asked: nothing here resolves outside the domain.
        upstreams: vec![Ipv4Addr::new(10, 204, 0, 1).into()],
        ipv6: Some(Ipv6Config {
            gateway: "fd42:0:0:6::1".parse().unwrap(),
            prefix_len: 64,
        }),
        reservations: vec![],
    };
    corral_netservice::write_config(&state, &config).unwrap();
    let pid = spawn_in(&host, &state);
    let service = Service(&state);
    let address = wait_for("a SLAAC address", Duration::from_secs(30), || {
        let addresses = c1.ip(&["-6", "addr", "show", "dev", "eth0", "scope", "global"]);
        addresses
            .split_whitespace()
            .filter_map(|word| word.split_once('/'))
            .filter_map(|(address, prefix)| Some((address.parse::<Ipv6Addr>().ok()?, prefix)))
            .find(|(address, _)| address.segments()[..4] == [0xfd42, 0, 0, 6])
            .map(|(address, prefix)| (address, prefix.to_string()))
    });
    assert_eq!(address.1, "64", "{address:?}");
    let routes = c1.ip(&["-6", "route", "show", "default"]);
    assert!(
        routes.contains("proto ra"),
        "the RA makes the bridge the router: {routes}"
    );
    corral_netservice::stop(&state).unwrap();
    drop(service);
    let _ = nix::sys::wait::waitpid(pid, None);
    assert!(processes_naming(&state).is_empty());
}
