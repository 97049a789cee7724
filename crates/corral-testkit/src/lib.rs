//! Helpers shared by corral's test suites.
//!
//! Tests that need a host facility (root, `/dev/kvm`, a network namespace, a tool from apt) must
//! never pass silently where the facility is missing: they call [`skip`] (or the `require_*`
//! macros), which prints the reason and records it in the file named by `CORRAL_TEST_SKIP_LOG`, so
//! the test script can list every skip at the end of the run.

use std::io::Write;
use std::path::Path;

pub mod crash;
pub mod http;
pub mod identity;
pub mod vfat;

/// Records that the current test was skipped, and why.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(log) = std::env::var_os("CORRAL_TEST_SKIP_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            // A lost skip line only weakens the summary, so a failed write is not a test failure.
            let _ = writeln!(file, "{line}");
        }
    }
}

/// True when the test runs as root (uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when `/dev/kvm` can be opened read-write.
pub fn has_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// True when `program` is found on `PATH`.
pub fn has_program(program: &str) -> bool {
    find_program(program).is_some()
}

/// Where `program` is on `PATH`, if it is.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The whole lines `reader` yields, without their newline, up to its end or to a line cut short
/// (a writer killed mid-line: its tail is not a line).
pub fn whole_lines(reader: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = std::io::BufReader::new(reader);
    std::iter::from_fn(move || {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(_) if line.ends_with('\n') => {
                line.pop();
                Some(line)
            }
            _ => None,
        }
    })
}

/// `criu check`'s verdict on this host: `Ok` when it passes, else what it printed (its error
/// lines), or why it could not be run.
pub fn criu_check() -> Result<(), String> {
    match std::process::Command::new("criu").arg("check").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        Err(e) => Err(format!("criu cannot be run: {e}")),
    }
}

/// Returns from the calling test (after recording a skip) unless `criu check` passes.
#[macro_export]
macro_rules! require_criu {
    () => {
        if let Err(reason) = $crate::criu_check() {
            $crate::skip(&format!(
                "needs a host where `criu check` passes; here it says: {}",
                reason.replace('\n', " | ")
            ));
            return;
        }
    };
}

/// Returns from the calling test (after recording a skip) unless it runs as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root");
            return;
        }
    };
}

/// Returns from the calling test (after recording a skip) unless `/dev/kvm` is usable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::has_kvm() {
            $crate::skip("needs a read-write /dev/kvm");
            return;
        }
    };
}

/// Returns from the calling test (after recording a skip) unless `program` is on PATH.
#[macro_export]
macro_rules! require_program {
    ($program:expr) => {
        if !$crate::has_program($program) {
            $crate::skip(&format!("needs `{}` on PATH", $program));
            return;
        }
    };
}

/// A network namespace made for one test (`ip netns add`) and removed when dropped. Needs root
/// and iproute2; guard with `require_root!()` and `require_program!("ip")`.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `corral-TAG-PID`; panics (failing the test) when `ip` refuses.
    pub fn new(tag: &str) -> Netns {
        let netns = Netns {
            name: format!("corral-{tag}-{}", std::process::id()),
        };
        run_ip(&["netns", "add", &netns.name]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip ARGS` inside the namespace and returns its output; panics when it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ip(&[&["netns", "exec", &self.name, "ip"], args].concat())
    }

    /// A namespace `tag` whose `eth0` is the far end of a veth pair from this one, where the
    /// near end, `port`, is a port of `bridge`, up; the new namespace's `lo` and `eth0` are up.
    pub fn client_on_bridge(&self, tag: &str, port: &str, bridge: &str) -> Netns {
        let client = Netns::new(tag);
        self.add_veth(port, &client, "eth0");
        self.ip(&["link", "set", port, "master", bridge, "up"]);
        client.ip(&["link", "set", "lo", "up"]);
        client.ip(&["link", "set", "eth0", "up"]);
        client
    }

    /// A namespace `tag` playing the outside world: its `eth0` has 198.51.100.1/24 and is
    /// joined to this namespace's `wan0`, 198.51.100.2/24 (documentation addresses, so nothing
    /// is mistaken for a real network); both up, with the new namespace's `lo`.
    pub fn wan(&self, tag: &str) -> Netns {
        let wan = Netns::new(tag);
        wan.ip(&["link", "set", "lo", "up"]);
        self.add_veth("wan0", &wan, "eth0");
        self.ip(&["address", "add", "198.51.100.2/24", "dev", "wan0"]);
        self.ip(&["link", "set", "wan0", "up"]);
        wan.ip(&["address", "add", "198.51.100.1/24", "dev", "eth0"]);
        wan.ip(&["link", "set", "eth0", "up"]);
        wan
    }

    /// A veth pair: `name` here, `peer_name` in `peer`.
    fn add_veth(&self, name: &str, peer: &Netns, peer_name: &str) {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ]);
    }

    /// A command that runs `program` inside the namespace. Through `nsenter`, which enters
    /// only the network namespace: `ip netns exec` also remounts /sys, which hides the cgroup
    /// hierarchies an instance's supervisor needs.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        command
    }
}

fn run_ip(args: &[&str]) -> String {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run ip {args:?}: {err}"));
    assert!(
        output.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Makes `image`, an ext4 filesystem of `size` (`mkfs.ext4` syntax: `64M`) holding the tree at
/// `tree` (`mkfs.ext4 -d`, no root or mount needed); panics with mkfs's output when it fails.
/// Guard with `require_program!("mkfs.ext4")`.
pub fn mkfs_ext4(tree: &Path, image: &Path, size: &str) {
    let output = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(tree)
        .arg(image)
        .arg(size)
        .output()
        .unwrap_or_else(|err| panic!("cannot run mkfs.ext4: {err}"));
    assert!(output.status.success(), "mkfs.ext4 failed: {output:?}");
}

/// The VMM under test: `corral vmm run` of `corral` (the test's `CARGO_BIN_EXE_corral`), or
/// the `corral-vmm` executable `CORRAL_TEST_VMM` names (it takes the same arguments), with
/// which scripts/test.sh runs the VMM tests again: the static corral-vmm, against musl, that
/// bench/vmm-start measures. The program, then its leading arguments.
pub fn vmm_run_command(corral: &str) -> (std::ffi::OsString, &'static [&'static str]) {
    match std::env::var_os("CORRAL_TEST_VMM") {
        Some(vmm) => (vmm, &[]),
        None => (corral.into(), &["vmm", "run"]),
    }
}
