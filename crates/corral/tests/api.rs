//! `corral serve`: the REST API on a unix socket, over the same corral root as the CLI. An
//! instance created and started through the API runs (its supervisor started by the server),
//! the CLI and the API see the same instances, a change made by either is seen by the other, and
//! the server ends cleanly on SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_testkit::http;
use serde_json::{json, Value};

mod common;

use common::serve::{loopback_bridge, Server};

/// What `corral list --output json` and `GET /1.0/instances` both show, without the uptime
/// (the two are read a moment apart).
fn comparable(list: Value) -> Value {
    let mut list = list;
    for summary in list.as_array_mut().unwrap() {
        summary.as_object_mut().unwrap().remove("uptime_secs");
    }
    list
}

#[test]
fn the_api_and_the_cli_manage_the_same_instances() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let server = Server::start(&root);
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let group = nix::unistd::Group::from_name("corral").unwrap();
    assert_eq!(mode, if group.is_some() { 0o660 } else { 0o600 });

    // A plain GET of the websocket is a 400 with the reason.
    let (status, plain) = server.call("GET", "/1.0/events", None);
    assert_eq!(status, 400);
    assert!(
        plain["error"].as_str().unwrap().contains("is a websocket"),
        "{plain}"
    );
    let mut events = server.events();

    // Created and started through the API: its supervisor runs.
    let body = json!({
        "name": "box",
        "rootfs": rootfs,
        "command": ["/bin/sh", "-c", "sleep 1000"],
        "default_network": "none",
    });
    server.succeeds(server.call("POST", "/1.0/instances?start=true", Some(body)));
    assert_eq!(server.status("box"), "running");
    assert_eq!(root.status("box"), "running");
    // The operation is announced, then the events it caused, in order, then its end.
    let announced = events.next().unwrap();
    assert_eq!(announced["type"], "operation");
    assert_eq!(announced["operation"]["status"], "running");
    assert_eq!(events.lifecycle(2), ["box created", "box started"]);
    let ended = events.next().unwrap();
    assert_eq!(ended["operation"]["status"], "success", "{ended}");

    // The CLI lists what the API lists.
    let (_, api_list) = server.call("GET", "/1.0/instances", None);
    let cli_list: Value =
        serde_json::from_str(&root.ok(&["list", "--all", "--output", "json"])).unwrap();
    assert_eq!(comparable(api_list), comparable(cli_list));

    // Stopped through the API, started again by the CLI while the server runs.
    let stop = json!({"action": "stop", "timeout": 1});
    server.succeeds(server.call("PUT", "/1.0/instances/box/state", Some(stop)));
    assert_eq!(root.status("box"), "stopped");
    root.ok(&["start", "box"]);
    assert_eq!(server.status("box"), "running");
    // What the CLI did is on the API's feed too.
    assert_eq!(events.lifecycle(2), ["box stopped", "box started"]);

    // A running instance is not deleted without force; the operation says why.
    let (status, refused) = server.call("DELETE", "/1.0/instances/box", None);
    assert_eq!(status, 202);
    let refused = server.ended(&refused);
    assert_eq!(refused["status"], "failure");
    assert_eq!(refused["error_code"], 409, "{refused}");
    server.succeeds(server.call("DELETE", "/1.0/instances/box?force=true", None));
    assert_eq!(root.ok(&["list", "--all", "--output", "json"]).trim(), "[]");

    assert_eq!(events.lifecycle(2), ["box stopped", "box deleted"]);

    // A stopping server closes the feed as going away, and ends.
    let status = server.stop();
    assert!(status.success(), "corral serve ended with {status}");
    loop {
        match events.next() {
            Ok(_) => continue,
            Err((code, reason)) => {
                assert_eq!((code, reason.as_str()), (1001, "the server is stopping"));
                break;
            }
        }
    }
}

/// The value of the sample of `metric` whose labels include each of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_pass_promtool_and_a_nic_counter_moves_by_exactly_the_bytes_sent() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root for namespaces and cgroups");
    }
    corral_testkit::require_program!("promtool");
    if !common::have_busybox() {
        return;
    }
    // A host of its own whose side of the nic sends nothing by itself (no IPv6).
    let net = corral_testkit::Netns::new("metrics");
    for sysctl in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        let set = net
            .command("sysctl")
            .args(["-qw", sysctl])
            .status()
            .unwrap();
        assert!(set.success(), "sysctl {sysctl}");
    }
    net.ip(&["link", "add", "br0", "type", "bridge"]);
    net.ip(&["address", "add", "10.0.5.1/24", "dev", "br0"]);
    net.ip(&["link", "set", "br0", "up"]);
    let root = common::CorralRoot::in_netns(&net);
    let rootfs = common::busybox_rootfs(root.dir.path());
    root.ok(&[
        "create",
        "counted",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--nic",
        "bridge=br0,ip=10.0.5.10/24",
        "--",
        "sleep",
        "1000",
    ]);
    root.ok(&["start", "counted"]);
    let server = Server::start(&root);

    let text = server.metrics();
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let name = "name=\"counted\"";
    assert_eq!(
        sample(
            &text,
            "corral_instances",
            &["type=\"container\"", "status=\"running\""]
        ),
        Some(1.0)
    );
    assert!(
        sample(&text, "corral_instance_cpu_seconds_total", &[name]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "corral_instance_memory_bytes", &[name]).unwrap() > 0.0,
        "{text}"
    );

    // No neighbour lookups either way: the frames counted are the test's alone.
    let nic = &root.info("counted")["nics"][0];
    let mac = nic["mac"].as_str().unwrap();
    net.ip(&[
        "neigh",
        "replace",
        "10.0.5.10",
        "lladdr",
        mac,
        "dev",
        "br0",
        "nud",
        "permanent",
    ]);
    let link = net.ip(&["-o", "link", "show", "br0"]);
    let bridge_mac = link
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link:?}"))
        .to_owned();
    let mut inside = std::ffi::OsString::from("--net=");
    inside.push(root.instance_dir("counted").join("run/netns"));
    let neighbour = std::process::Command::new("nsenter")
        .arg(inside)
        .args(["ip", "neigh", "replace", "10.0.5.1", "lladdr", &bridge_mac])
        .args(["dev", "eth0", "nud", "permanent"])
        .status()
        .unwrap();
    assert!(neighbour.success());

    let received = |text: &str, what: &str| {
        sample(
            text,
            &format!("corral_instance_nic_receive_{what}_total"),
            &[name, "nic=\"0\""],
        )
        .unwrap_or_else(|| panic!("no nic sample in\n{text}")) as u64
    };
    // The link's own chatter after it came up (IGMP reports, repeated for a few seconds) ends
    // before the count starts.
    let mut before = server.metrics();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(1500));
        let now = server.metrics();
        let quiet = received(&now, "packets") == received(&before, "packets");
        before = now;
        if quiet {
            break;
        }
    }
    // 20 UDP datagrams of 1000 bytes: 1042 bytes each on the wire (UDP 8, IPv4 20, Ethernet 14).
    let send = net
        .command("bash")
        .args([
            "-c",
            "for i in $(seq 20); do printf '%1000s' x > /dev/udp/10.0.5.10/9; done",
        ])
        .status()
        .unwrap();
    assert!(send.success());
    std::thread::sleep(Duration::from_millis(500));
    let after = server.metrics();
    let packets = received(&after, "packets") - received(&before, "packets");
    let bytes = received(&after, "bytes") - received(&before, "bytes");
    assert_eq!((packets, bytes), (20, 20 * 1042));
    assert_eq!(
        received(&after, "bytes") - received(&before, "bytes"),
        20 * 1042
    );
    root.ok(&["kill", "counted"]);
}

/// Runs curl as user 65534 against `socket`; its exit status and output.
fn curl_as_nobody(socket: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["curl", "-sS", "--unix-socket"])
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn other_users_are_refused_and_events_name_the_caller() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root to act as another user");
    }
    corral_testkit::require_program!("curl");
    corral_testkit::require_program!("setpriv");
    if !common::have_busybox() {
        return;
    }
    let root = common::CorralRoot::new();
    let rootfs = common::busybox_rootfs(root.dir.path());
    root.ok(&[
        "create",
        "mine",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]);
    let server = Server::start(&root);

    // Not root, not in the socket's group: the kernel refuses the connection (curl's 7:
    // could not connect). The same user gets in once the socket's mode lets it, below.
    let refused = curl_as_nobody(&server.socket, &["http://corral/1.0/instances"]);
    assert_eq!(refused.status.code(), Some(7), "{refused:?}");

    // Let that user in (as the corral group would) and have it start the instance: the event
    // names it, by the kernel's word (SO_PEERCRED).
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let started = curl_as_nobody(
        &server.socket,
        &[
            "-X",
            "PUT",
            "-d",
            r#"{"action": "start"}"#,
            "http://corral/1.0/instances/mine/state",
        ],
    );
    assert!(started.status.success(), "{started:?}");
    let operation: Value = serde_json::from_slice(&started.stdout).unwrap();
    server.succeeds((202, operation));
    root.ok(&["kill", "mine"]);
    let journal = std::fs::read_to_string(root.path().join("events.jsonl")).unwrap();
    let events: Vec<Value> = journal
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let by = |action: &str| {
        events
            .iter()
            .find(|event| event["action"] == action)
            .unwrap_or_else(|| panic!("no {action} event in {journal}"))["uid"]
            .clone()
    };
    assert_eq!(by("created"), json!(0), "the CLI's own uid");
    assert_eq!(by("started"), json!(65534), "the API caller's uid");
    assert_eq!(by("stopped"), json!(0));
}

/// One way to drive corral: the CLI or the API. Each verb answers `Ok(())` or the error's
/// first sentence.
trait Frontend {
    fn verb(&self, verb: &str, name: &str) -> Result<(), String>;
    fn create(&self, name: &str, rootfs: &Path) -> Result<(), String>;
    /// `(status, last exit reason)` as the front end shows the instance.
    fn state(&self, name: &str) -> (String, String);
}

struct Cli<'a>(&'a common::CorralRoot);

impl Frontend for Cli<'_> {
    fn verb(&self, verb: &str, name: &str) -> Result<(), String> {
        let args: Vec<&str> = match verb {
            "stop" => vec!["stop", name, "--timeout", "1"],
            "restart" => vec!["restart", name, "--timeout", "1"],
            other => vec![other, name],
        };
        self.0.outcome(&args)
    }

    fn create(&self, name: &str, rootfs: &Path) -> Result<(), String> {
        let out = self.0.run(&[
            "create",
            name,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "sleep",
            "1000",
        ]);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        }
    }

    fn state(&self, name: &str) -> (String, String) {
        let out = self.0.run(&["info", name, "-o", "json"]);
        if !out.status.success() {
            return ("gone".into(), String::new());
        }
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        let state = &info["state"];
        (
            state["status"].as_str().unwrap().to_owned(),
            state["last_exit"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

impl Frontend for Server {
    fn verb(&self, verb: &str, name: &str) -> Result<(), String> {
        let path = format!("/1.0/instances/{name}");
        self.outcome(match verb {
            "delete" => self.call("DELETE", &path, None),
            action => {
                let body = json!({"action": action, "timeout": 1});
                self.call("PUT", &format!("{path}/state"), Some(body))
            }
        })
    }

    fn create(&self, name: &str, rootfs: &Path) -> Result<(), String> {
        let body = json!({"name": name, "rootfs": rootfs, "command": ["sleep", "1000"],
                          "default_network": "none"});
        self.outcome(self.call("POST", "/1.0/instances", Some(body)))
    }

    fn state(&self, name: &str) -> (String, String) {
        let (status, instance) = self.call("GET", &format!("/1.0/instances/{name}"), None);
        if status == 404 {
            return ("gone".into(), String::new());
        }
        let state = &instance["state"];
        (
            state["status"].as_str().unwrap().to_owned(),
            state["last_exit"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

/// The lifecycle scenario: each step's outcome (the error's first sentence, `NAME` for the
/// instance's name) and the state it leaves.
fn scenario(front: &dyn Frontend, name: &str, rootfs: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut record = |step: &str, outcome: Result<(), String>| {
        let outcome = match outcome {
            Ok(()) => "ok".to_owned(),
            // The API's sentence is the whole chain; the CLI's first line is its first part.
            Err(err) => err.split(": ").next().unwrap().replace(name, "NAME"),
        };
        let (status, reason) = front.state(name);
        seen.push(format!("{step}: {outcome} -> {status} {reason}"));
    };
    record("create", front.create(name, rootfs));
    for verb in [
        "pause", "start", "start", "pause", "pause", "resume", "restart", "delete", "stop", "stop",
        "start", "kill", "resume", "delete", "delete",
    ] {
        record(verb, front.verb(verb, name));
    }
    seen
}

#[test]
fn every_verb_gives_the_same_result_through_the_cli_and_the_api() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let server = Server::start(&root);
    let through_cli = scenario(&Cli(&root), "by-cli", &rootfs);
    let through_api = scenario(&server, "by-api", &rootfs);
    assert_eq!(through_cli, through_api);
    // The scenario means something: it went through every state and refusal.
    let expected_markers = [
        "pause: instance NAME is not running; start it with `corral start NAME` -> stopped ",
        "start: instance NAME is already running -> running ",
        "delete: instance NAME is running; stop it first, or delete it with --force -> running ",
        "pause: instance NAME is already paused; resume it with `corral resume NAME` -> paused ",
        "kill: ok -> stopped stopped",
        "delete: ok -> gone ",
    ];
    for marker in expected_markers {
        assert!(
            through_cli.iter().any(|step| step.contains(marker)),
            "no {marker:?} in {through_cli:#?}"
        );
    }
}

/// A tmpfs mounted at a path for a test's life: whatever a fuzzer makes the server copy stays
/// small and goes with it.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(path: &Path) -> SmallTmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=256m,mode=0700"),
        )
        .unwrap();
        SmallTmpfs(path.to_owned())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root to mount the root's tmpfs");
    }
    corral_testkit::require_program!("st");
    // In a namespace of its own: what a generated request asks of networks stays there.
    let net = corral_testkit::Netns::new("fuzz");
    let root = common::CorralRoot::in_netns(&net);
    let _tmpfs = SmallTmpfs::mount(&root.path());
    let server = Server::start(&root);
    let port = loopback_bridge(&server.socket);
    let work = tempfile::tempdir().unwrap();
    // Every check but "schema-valid data is accepted": a request the document allows can still
    // ask for something impossible (a definition file that does not parse), which is a 400.
    // The stateful phase is left out: it follows links schemathesis infers from Location.
    let out = std::process::Command::new("st")
        .current_dir(work.path())
        .args(["run", &format!("http://127.0.0.1:{port}/1.0/openapi.json")])
        .args(["--exclude-path", "/1.0/events", "--checks", "all"])
        // A network made succeeds with a DHCP/DNS service that outlives the server; the
        // resources test creates and deletes networks through the API instead.
        .args(["--exclude-operation-id", "create_network"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args([
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "100",
        ])
        .args(["--seed", "1", "--no-color"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" passed"), "{report}");
}

#[test]
fn the_console_answers_over_a_websocket_and_the_logs_keep_what_it_printed() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    root.ok(&[
        "create",
        "term",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "/bin/sh",
    ]);
    let server = Server::start(&root);
    // Not running: refused with the reason, before any upgrade.
    let (status, refused) = server.call("GET", "/1.0/instances/term/console", None);
    assert_eq!(
        (status, refused["error"].as_str().unwrap()),
        (
            409,
            "instance term is not running; start it with `corral start term`"
        )
    );
    root.ok(&["start", "term"]);

    let stream = std::os::unix::net::UnixStream::connect(&server.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut console, _) = tungstenite::client("ws://corral/1.0/instances/term/console", stream)
        .unwrap_or_else(|err| panic!("cannot attach: {err}"));
    console
        .send(tungstenite::Message::binary(
            b"echo marker-$((6*7))\r".to_vec(),
        ))
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("marker-42") {
        match console.read().expect("console output within 10 s") {
            tungstenite::Message::Binary(bytes) => seen.extend_from_slice(&bytes),
            tungstenite::Message::Close(frame) => panic!("closed: {frame:?}; seen {seen:?}"),
            _ => {}
        }
    }
    console.close(None).unwrap();
    assert_eq!(
        root.status("term"),
        "running",
        "detaching leaves it running"
    );

    let (status, log) = http::request(&server.socket, "GET", "/1.0/instances/term/logs", None);
    assert_eq!(status, 200);
    assert!(log.contains("marker-42"), "{log:?}");
    assert_eq!(
        log.as_bytes(),
        root.ok(&["logs", "term"]).as_bytes(),
        "the CLI's logs are the API's"
    );
    root.ok(&["kill", "term"]);
}

#[test]
fn volumes_images_networks_and_snapshots_list_as_the_cli_lists_them() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root for containers");
    }
    if !common::have_busybox() {
        return;
    }
    let root = common::CorralRoot::new();
    let rootfs = common::busybox_rootfs(root.dir.path());
    root.ok(&["volume", "create", "data", "--size", "1M"]);
    root.ok(&[
        "create",
        "box",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "true",
    ]);
    root.ok(&["snapshot", "create", "box", "first"]);
    let server = Server::start(&root);
    for (path, cli, at_least) in [
        ("/1.0/volumes", vec!["volume", "list", "-o", "json"], 1),
        ("/1.0/images", vec!["image", "list", "-o", "json"], 0),
        ("/1.0/networks", vec!["network", "list", "-o", "json"], 0),
        (
            "/1.0/instances/box/snapshots",
            vec!["snapshot", "list", "box", "-o", "json"],
            1,
        ),
    ] {
        let (status, api) = server.call("GET", path, None);
        assert_eq!(status, 200, "{path}: {api}");
        let cli: Value = serde_json::from_str(&root.ok(&cli)).unwrap();
        assert_eq!(api, cli, "{path}");
        assert!(api.as_array().unwrap().len() >= at_least, "{path}: {api}");
    }
    let (status, missing) = server.call("GET", "/1.0/instances/nobox/snapshots", None);
    assert_eq!(status, 404, "{missing}");
}

#[test]
fn a_copy_reports_its_progress_and_a_cancelled_one_leaves_nothing() {
    let root = common::CorralRoot::new();
    // A VM image whose disk holds 16 MiB of data: eight steps of the copy, each slowed to
    // 400 ms by the failpoint, so the copy is still running when it is cancelled.
    let scratch = root.dir.path();
    common::import_vm_image(&root, scratch, "data", "32M", "hello");
    let image_disk = {
        let listed: Value =
            serde_json::from_str(&root.ok(&["image", "list", "-o", "json"])).unwrap();
        let fingerprint = listed[0]["fingerprint"].as_str().unwrap().to_owned();
        root.path().join(format!("images/{fingerprint}/disk.qcow2"))
    };
    {
        let mut disk = corral_disk::open(
            &image_disk,
            corral_disk::OpenOptions::writable().format(corral_disk::DiskFormat::Qcow2),
        )
        .unwrap();
        disk.write_at(&vec![0x5a; 16 << 20], 0).unwrap();
        disk.flush().unwrap();
    }
    let server = Server::start_with(&root, &[("FAILPOINTS", "image.copying=sleep(400)")]);
    let mut events = server.events();
    let create = json!({"name": "copy", "image": "data", "full": true});
    let (status, operation) = server.call("POST", "/1.0/instances", Some(create));
    assert_eq!(status, 202, "{operation}");
    assert_eq!(operation["may_cancel"], true, "{operation}");
    let path = format!("/1.0/operations/{}", operation["id"].as_str().unwrap());
    let mut progress = Value::Null;
    common::wait_for("the copy's progress", Duration::from_secs(30), || {
        progress = server.call("GET", &path, None).1["progress"].clone();
        progress["done"].as_u64().is_some_and(|done| done > 0)
    });
    assert_eq!(progress["phase"], "copying the disk", "{progress}");
    assert_eq!(progress["total"], 32 << 20, "{progress}");

    let (status, asked) = server.call("DELETE", &path, None);
    assert_eq!(
        (status, &asked["status"]),
        (202, &json!("running")),
        "{asked}"
    );
    let ended = server.ended(&operation);
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert!(
        ended["error"].as_str().unwrap().contains("cancelled"),
        "{ended}"
    );
    let (status, again) = server.call("DELETE", &path, None);
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]
            .as_str()
            .unwrap()
            .contains("has already ended: cancelled"),
        "{again}"
    );

    // Nothing of the instance is left: not listed, no directory, no staging, no partial disk.
    assert_eq!(server.call("GET", "/1.0/instances/copy", None).0, 404);
    let left: Vec<_> = std::fs::read_dir(root.path().join("instances"))
        .into_iter()
        .flatten()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The feed carried the progress before the end.
    let mut updates = Vec::new();
    while updates
        .last()
        .is_none_or(|update: &Value| update["status"] == "running")
    {
        let message = events
            .next()
            .unwrap_or_else(|closed| panic!("closed: {closed:?}"));
        if message["type"] == "operation" && message["operation"]["id"] == operation["id"] {
            updates.push(message["operation"].clone());
        }
    }
    assert!(
        updates
            .iter()
            .any(|update| update["progress"]["phase"] == "copying the disk"),
        "{updates:?}"
    );
    assert_eq!(updates.last().unwrap()["status"], "cancelled");

    // A delete is not a copy: it cannot be cancelled (nor can it once it has ended).
    root.ok(&["create", "plain", "--image", "data", "--memory", "32M"]);
    let (status, deleting) = server.call("DELETE", "/1.0/instances/plain", None);
    assert_eq!(status, 202, "{deleting}");
    assert_eq!(deleting["may_cancel"], false);
    let path = format!("/1.0/operations/{}", deleting["id"].as_str().unwrap());
    let (status, refused) = server.call("DELETE", &path, None);
    let refusal = refused["error"].as_str().unwrap();
    assert!(
        status == 409
            && (refusal.contains("cannot be cancelled")
                || refusal.contains("has already ended: success")),
        "{refused}"
    );
    assert_eq!(server.ended(&deleting)["status"], "success");
}

#[test]
fn the_event_feed_carries_the_servers_log_records_and_only_the_types_asked_for() {
    let Some((root, rootfs)) = common::container_root() else {
        return;
    };
    let rootfs = rootfs.to_str().unwrap();
    root.ok(&["create", "box", "--rootfs", rootfs, "--", "/bin/sh"]);
    let server = Server::start(&root);
    let (status, refused) = server.call("GET", "/1.0/events?type=lifecycle,gossip", None);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"],
        "there is no event type \"gossip\"; the types are lifecycle, operation and logging"
    );

    let mut logs = server.events_with("?type=logging");
    let pause = json!({"action": "pause"});
    let failed = server.ended(
        &server
            .call("PUT", "/1.0/instances/box/state", Some(pause))
            .1,
    );
    assert_eq!(failed["status"], "failure", "{failed}");
    let expected = format!(
        "pausing instance box failed: {}",
        failed["error"].as_str().unwrap()
    );
    let mut records = Vec::new();
    while records
        .last()
        .is_none_or(|record: &Value| record["message"] != expected.as_str())
    {
        let message = logs
            .next()
            .unwrap_or_else(|closed| panic!("closed: {closed:?}"));
        assert_eq!(
            message["type"], "logging",
            "only the type asked for: {message}"
        );
        records.push(message["record"].clone());
    }
    assert_eq!(records.last().unwrap()["level"], "warn", "{records:?}");

    // The server's last record goes out before the feed is closed.
    assert!(server.stop().success());
    let mut last = Vec::new();
    let closed = loop {
        match logs.next() {
            Ok(message) => last.push(message["record"]["message"].clone()),
            Err(closed) => break closed,
        }
    };
    assert_eq!(closed.0, 1001, "{closed:?}");
    assert!(
        last.contains(&json!("stopping: answering the requests in flight")),
        "{last:?}"
    );
}
