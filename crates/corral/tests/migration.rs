//! Live migration end to end between two `corral vmm run` processes on this host: a source run
//! with `--track-dirty-pages` and `corral vmm control SOCKET migrate --to ADDR`, a destination
//! run with `--incoming ADDR`, over a unix socket and over TCP on loopback; and the failures
//! that must leave the source running.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_testkit::{require_kvm, require_program, require_root, Netns};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "s3cret-token";

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

/// A `corral vmm run` process with its console in a file and a control socket.
struct Vmm {
    child: Child,
    console: PathBuf,
    socket: PathBuf,
}

impl Vmm {
    /// Spawns `corral vmm run ARGS`, in network namespace `netns` if given.
    fn spawn_in(netns: Option<&Netns>, dir: &Path, tag: &str, args: &[&str]) -> Vmm {
        let console = dir.join(format!("console-{tag}"));
        let socket = dir.join(format!("control-{tag}.sock"));
        let mut command = match netns {
            Some(netns) => netns.command(env!("CARGO_BIN_EXE_corral")),
            None => corral(),
        };
        let child = command
            .args(["vmm", "run"])
            .args(args)
            .arg(format!("--serial=file:{}", console.display()))
            .arg("--control-socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm {
            child,
            console,
            socket,
        }
    }

    /// A source: `guest` booted with dirty-page tracking.
    fn source(guest: &str, dir: &Path, memory: &str) -> Vmm {
        Vmm::source_in(None, guest, dir, memory)
    }

    fn source_in(netns: Option<&Netns>, guest: &str, dir: &Path, memory: &str) -> Vmm {
        let kernel = corral_guests::elf(guest).display().to_string();
        let args = [
            "--memory",
            memory,
            "--kernel",
            &kernel,
            "--track-dirty-pages",
        ];
        let vmm = Vmm::spawn_in(netns, dir, "source", &args);
        wait_until("the control socket exists", || vmm.socket.exists());
        vmm
    }

    /// A destination waiting at `address` for a VM with [`TOKEN`].
    fn destination(dir: &Path, address: &str) -> Vmm {
        Vmm::destination_in(None, dir, address)
    }

    fn destination_in(netns: Option<&Netns>, dir: &Path, address: &str) -> Vmm {
        Vmm::spawn_in(
            netns,
            dir,
            "destination",
            &["--incoming", address, "--migration-token", TOKEN],
        )
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    fn wait_for_lines(&self, prefix: &str, lines: usize) {
        wait_until("the guest to print", || {
            numbered(&self.output(), prefix).len() >= lines
        });
    }

    fn control(&self, args: &[&str]) -> Output {
        corral()
            .args(["vmm", "control"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Asks the VMM to migrate to `address`, retrying while the destination does not listen
    /// yet; returns the last answer.
    fn migrate(&self, address: &str, token: &str, extra: &[&str]) -> Output {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut args = vec!["migrate", "--to", address, "--token", token];
            args.extend_from_slice(extra);
            let answer = self.control(&args);
            let refused = text(&answer.stdout).contains("cannot connect to the migration");
            if !refused || Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to end; its status and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the VMM did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A test that fails midway must not leave its VMMs running.
impl Drop for Vmm {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The numbers of the complete lines that start with `prefix`, in order (the last line may
/// still be being printed).
fn numbered(console: &str, prefix: &str) -> Vec<u64> {
    console
        .split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .filter_map(|line| line.strip_prefix(prefix))
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("bad line {n:?} in {console}"))
        })
        .collect()
}

/// The migration report of a successful answer.
fn report(answer: &Output) -> serde_json::Value {
    assert!(
        answer.status.success(),
        "{}{}",
        text(&answer.stdout),
        text(&answer.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(value["response"], "migrated", "{value}");
    println!("migration report: {value}");
    value
}

/// Migrates a counting guest to `address` and checks the count goes on at the destination with
/// no gap and no repeat, the source exits as migrated and the destination keeps running.
fn counter_migrates(dir: &Path, address: &str) {
    let source = Vmm::source("counter", dir, "32M");
    source.wait_for_lines("count ", 3);
    let mut destination = Vmm::destination(dir, address);
    let report = report(&source.migrate(address, TOKEN, &[]));
    let before = source.output();
    let (code, stderr) = source.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("vm stopped: migrated"), "{stderr}");

    destination.wait_for_lines("count ", 3);
    assert!(destination.is_running());
    let after = destination.output();
    // The source's console then the destination's: one unbroken sequence (a line the source
    // was printing when it paused is finished by the destination).
    let all = numbered(&format!("{before}{after}"), "count ");
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "before: {before:?}\nafter: {after:?}");
    assert!(numbered(&after, "count ").len() >= 3 || after.lines().count() >= 3);
    assert!(report["bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["iterations"].as_u64().unwrap() >= 2, "{report}");
    let downtime = report["downtime_ms"].as_f64().unwrap();
    assert!(downtime > 0.0 && downtime < 5000.0, "{report}");
    let answer = destination.control(&["status"]);
    assert!(
        text(&answer.stdout).contains("running"),
        "{}",
        text(&answer.stdout)
    );
}

#[test]
fn a_counting_guest_migrates_over_a_unix_socket_with_no_gap_and_no_repeat() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("migrate.sock").display());
    counter_migrates(dir.path(), &address);
}

#[test]
fn a_counting_guest_migrates_over_tcp_on_loopback() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    counter_migrates(dir.path(), &format!("tcp:127.0.0.1:{port}"));
}

#[test]
fn a_guest_dirtying_memory_migrates_with_its_pages_intact() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source("dirtier", dir.path(), "64M");
    source.wait_for_lines("round ", 2);
    let address = format!("unix:{}", dir.path().join("migrate.sock").display());
    let mut destination = Vmm::destination(dir.path(), &address);
    let report = report(&source.migrate(&address, TOKEN, &[]));
    let (code, stderr) = source.wait();
    assert_eq!(code, Some(0), "{stderr}");
    // The guest checks every page of its buffer each round: a page lost or stale stops it.
    let rounds = numbered(&destination.output(), "round ").len();
    destination.wait_for_lines("round ", rounds + 5);
    assert!(destination.is_running());
    assert!(!destination.output().contains("bad page"));
    // Its 8 MiB buffer went in the first pass and, rewritten meanwhile, again after it.
    assert!(report["bytes"].as_u64().unwrap() >= 16 << 20, "{report}");
    assert!(report["iterations"].as_u64().unwrap() >= 2, "{report}");
}

#[test]
fn a_migration_that_cannot_converge_gives_up_and_the_guest_runs_on() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source("dirtier", dir.path(), "64M");
    source.wait_for_lines("round ", 2);
    let address = format!("unix:{}", dir.path().join("migrate.sock").display());
    let destination = Vmm::destination(dir.path(), &address);
    // The guest never stops dirtying pages: no pause can be as short as 0 ms.
    let answer = source.migrate(
        &address,
        TOKEN,
        &["--downtime-limit", "0ms", "--max-iterations", "3"],
    );
    assert!(!answer.status.success());
    let message = text(&answer.stdout);
    assert!(
        message.contains("did not converge after 3 passes"),
        "{message}"
    );
    assert!(message.contains("keeps running here"), "{message}");
    let (code, stderr) = destination.wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("did not converge"), "{stderr}");
    keeps_printing(&source, "round ");
}

/// The source's guest is running: it prints more lines.
fn keeps_printing(source: &Vmm, prefix: &str) {
    let printed = numbered(&source.output(), prefix).len();
    source.wait_for_lines(prefix, printed + 3);
    let answer = source.control(&["status"]);
    assert!(
        text(&answer.stdout).contains("running"),
        "{}",
        text(&answer.stdout)
    );
}

#[test]
fn a_wrong_token_is_refused_and_the_source_keeps_counting() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source("counter", dir.path(), "32M");
    source.wait_for_lines("count ", 2);
    let address = format!("unix:{}", dir.path().join("migrate.sock").display());
    let destination = Vmm::destination(dir.path(), &address);
    let long = "x".repeat(1025);
    let answer = source.control(&["migrate", "--to", &address, "--token", &long]);
    let message = text(&answer.stdout);
    assert!(
        message.contains("1 to 1024 bytes; this one has 1025"),
        "{message}"
    );
    let answer = source.migrate(&address, "not-the-token", &[]);
    assert!(!answer.status.success());
    let message = text(&answer.stdout);
    assert!(message.contains("token does not match"), "{message}");
    let (code, stderr) = destination.wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("token does not match"), "{stderr}");
    keeps_printing(&source, "count ");
}

#[test]
fn a_destination_that_vanishes_mid_transfer_leaves_the_source_running() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source("counter", dir.path(), "32M");
    source.wait_for_lines("count ", 2);
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // A destination that accepts the token, takes the first bytes of the VM and dies.
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut hello = [0u8; 12 + TOKEN.len()];
        stream.read_exact(&mut hello).unwrap();
        let mut ready = b"CMIG".to_vec();
        ready.extend_from_slice(&1u16.to_le_bytes());
        ready.extend_from_slice(&2u16.to_le_bytes());
        ready.extend_from_slice(&0u32.to_le_bytes());
        stream.write_all(&ready).unwrap();
        let mut first = vec![0u8; 64 << 10];
        stream.read_exact(&mut first).unwrap();
    });
    let answer = source.migrate(&format!("unix:{}", path.display()), TOKEN, &[]);
    fake.join().unwrap();
    assert!(!answer.status.success());
    let message = text(&answer.stdout);
    assert!(
        message.contains("closed the connection") || message.contains("connection failed"),
        "{message}"
    );
    keeps_printing(&source, "count ");
}

/// Feeds `bytes` to a destination waiting on a unix socket; returns its exit status and stderr.
fn destination_fed(bytes: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migrate.sock");
    let destination = Vmm::destination(dir.path(), &format!("unix:{}", path.display()));
    wait_until("the destination listens", || path.exists());
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.write_all(bytes).unwrap();
    drop(stream);
    destination.wait()
}

#[test]
fn garbage_or_a_truncated_stream_to_a_destination_gets_one_clear_error() {
    require_kvm!();
    let (code, stderr) = destination_fed(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not a corral migration endpoint"),
        "{stderr}"
    );

    // A hello that announces 5 bytes of token and sends 2.
    let mut truncated = b"CMIG".to_vec();
    truncated.extend_from_slice(&1u16.to_le_bytes());
    truncated.extend_from_slice(&1u16.to_le_bytes());
    truncated.extend_from_slice(&5u32.to_le_bytes());
    truncated.extend_from_slice(b"s3");
    let (code, stderr) = destination_fed(&truncated);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("closed the connection"), "{stderr}");

    // A length far beyond what the kind may hold is refused without reading it.
    let mut hostile = b"CMIG".to_vec();
    hostile.extend_from_slice(&1u16.to_le_bytes());
    hostile.extend_from_slice(&1u16.to_le_bytes());
    hostile.extend_from_slice(&u32::MAX.to_le_bytes());
    let (code, stderr) = destination_fed(&hostile);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("more than 1024"), "{stderr}");
}

/// Two namespaces acting as hosts, joined by a veth whose source end sends at most 100 Mbit/s
/// (tc tbf): source 192.0.2.1, destination 192.0.2.2 (documentation addresses).
fn hosts_on_a_slow_link() -> (Netns, Netns) {
    let source = Netns::new("mig-src");
    let destination = Netns::new("mig-dst");
    source.ip(&[
        "link",
        "add",
        "mig0",
        "type",
        "veth",
        "peer",
        "name",
        "mig1",
        "netns",
        destination.name(),
    ]);
    for (netns, link, address) in [
        (&source, "mig0", "192.0.2.1/24"),
        (&destination, "mig1", "192.0.2.2/24"),
    ] {
        netns.ip(&["link", "set", "lo", "up"]);
        netns.ip(&["address", "add", address, "dev", link]);
        netns.ip(&["link", "set", link, "up"]);
    }
    let shaped = source
        .command("tc")
        .args([
            "qdisc", "add", "dev", "mig0", "root", "tbf", "rate", "100mbit",
        ])
        .args(["burst", "32kbit", "latency", "400ms"])
        .status()
        .unwrap();
    assert!(shaped.success());
    (source, destination)
}

#[test]
fn over_a_100mbit_link_a_counter_migrates_in_its_limit_a_dirtier_gives_up_and_survives_a_killed_destination(
) {
    require_root!();
    require_kvm!();
    require_program!("ip");
    require_program!("tc");
    require_program!("nsenter");
    let (source_host, destination_host) = hosts_on_a_slow_link();

    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source_in(Some(&source_host), "counter", dir.path(), "256M");
    source.wait_for_lines("count ", 3);
    let address = "tcp:192.0.2.2:7000";
    let mut destination = Vmm::destination_in(Some(&destination_host), dir.path(), address);
    let report = report(&source.migrate(address, TOKEN, &[]));
    let before = source.output();
    let (code, stderr) = source.wait();
    assert_eq!(code, Some(0), "{stderr}");
    destination.wait_for_lines("count ", 3);
    assert!(destination.is_running());
    let all = numbered(&format!("{before}{}", destination.output()), "count ");
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected);
    // The limit (300 ms) plus slack for building the VM at the destination on a busy host.
    let downtime = report["downtime_ms"].as_f64().unwrap();
    assert!(downtime < 300.0 + 500.0, "{report}");
    drop(destination);

    // 8 MiB rewritten all the time cannot go in 100 ms at 12.5 MB/s: the migration gives up.
    let dir = tempfile::tempdir().unwrap();
    let source = Vmm::source_in(Some(&source_host), "dirtier", dir.path(), "64M");
    source.wait_for_lines("round ", 2);
    let destination = Vmm::destination_in(Some(&destination_host), dir.path(), address);
    let extra = ["--downtime-limit", "100ms", "--max-iterations", "4"];
    let answer = source.migrate(address, TOKEN, &extra);
    let message = text(&answer.stdout);
    println!("{message}");
    assert!(!answer.status.success(), "{message}");
    assert!(
        message.contains("did not converge after 4 passes"),
        "{message}"
    );
    // Progress was printed while it ran: polled once a second, over passes of more than half a
    // second each on this link, so at least two of the four were seen (which ones depends on
    // the host's load).
    let progress = text(&answer.stderr);
    println!("{progress}");
    assert!(
        progress.matches("corral: migration pass ").count() >= 2,
        "{progress}"
    );
    let (code, _) = destination.wait();
    assert_eq!(code, Some(1));
    keeps_printing(&source, "round ");

    // A destination killed while the pages flow: the source runs on.
    let mut destination = Vmm::destination_in(Some(&destination_host), dir.path(), address);
    let deadline = Instant::now() + TIMEOUT;
    let migrate = loop {
        let mut migrate = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["vmm", "control"])
            .arg(&source.socket)
            .args(["migrate", "--to", address, "--token", TOKEN])
            .args(["--downtime-limit", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // Until the destination listens, the request fails at once.
        if migrate.try_wait().unwrap().is_none() || Instant::now() > deadline {
            break migrate;
        }
    };
    destination.child.kill().unwrap();
    let answer = migrate.wait_with_output().unwrap();
    let message = text(&answer.stdout);
    assert!(!answer.status.success(), "{message}");
    assert!(
        message.contains("closed the connection") || message.contains("connection failed"),
        "{message}"
    );
    keeps_printing(&source, "round ");
}

#[test]
fn a_jailed_source_refuses_tcp_and_migrates_over_a_unix_socket_in_its_jail() {
    require_root!();
    require_kvm!();
    require_program!("chown");
    let dir = tempfile::tempdir().unwrap();
    let jail = dir.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    let kernel = corral_guests::elf("counter").display().to_string();
    let jail_arg = jail.display().to_string();
    let args = [
        "--memory",
        "32M",
        "--kernel",
        &kernel,
        "--track-dirty-pages",
        "--jail",
        &jail_arg,
    ];
    let source = Vmm::spawn_in(None, &jail, "source", &args);
    wait_until("the control socket exists", || source.socket.exists());
    source.wait_for_lines("count ", 2);

    let answer = source.control(&["migrate", "--to", "tcp:127.0.0.1:9", "--token", TOKEN]);
    assert!(!answer.status.success());
    let message = text(&answer.stdout);
    assert!(message.contains("own network namespace"), "{message}");

    // The destination's socket in the jail, for the unprivileged user the jailed VMM runs as.
    let path = jail.join("migrate.sock");
    let address = format!("unix:{}", path.display());
    let mut destination = Vmm::destination(dir.path(), &address);
    wait_until("the destination listens", || path.exists());
    let chowned = Command::new("chown")
        .args(["corral"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(chowned.success());
    let report = report(&source.migrate(&address, TOKEN, &[]));
    let before = source.output();
    let (code, stderr) = source.wait();
    assert_eq!(code, Some(0), "{stderr} {report}");
    destination.wait_for_lines("count ", 3);
    assert!(destination.is_running());
    let all = numbered(&format!("{before}{}", destination.output()), "count ");
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected);
}
