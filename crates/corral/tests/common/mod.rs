//! Shared helpers for the container integration tests: a busybox root filesystem built from
//! Debian's `busybox-static`, bundles with a config.json from `corral oci spec`, and running the
//! real binary against a temporary state root.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod linux;
pub mod ovf;
pub mod serve;

/// Where `busybox-static` installs the static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// The corral under test: cargo's, or `$CORRAL_TEST_BIN_DIR/corral` when that is set
/// (scripts/test.sh runs the VM instance tests again with a copy of it beside the static
/// corral-vmm, the VMM instances then run).
pub fn corral_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CORRAL_TEST_BIN_DIR") {
        Some(dir) => Path::new(&dir)
            .join("corral")
            .to_string_lossy()
            .into_owned(),
        None => env!("CARGO_BIN_EXE_corral").to_owned(),
    })
}

/// True when the static busybox the rootfs is built from is installed; records a skip otherwise.
pub fn have_busybox() -> bool {
    if Path::new(BUSYBOX).is_file() {
        return true;
    }
    corral_testkit::skip(
        "needs /bin/busybox from Debian's busybox-static (scripts/deps.sh installs it)",
    );
    false
}

/// Builds a busybox root filesystem at `dir`: the static binary, one link per applet, the
/// directories containers mount onto and an /etc/passwd with root and an unprivileged user.
pub fn build_rootfs(dir: &Path) {
    for sub in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

/// A busybox root filesystem ([`build_rootfs`]) at `dir/busybox`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("busybox");
    build_rootfs(&rootfs);
    rootfs
}

/// A test root and a busybox root filesystem beside it; none (the skip printed) without root
/// or busybox.
pub fn container_root() -> Option<(CorralRoot, PathBuf)> {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root for namespaces and cgroups");
        return None;
    }
    if !have_busybox() {
        return None;
    }
    let root = CorralRoot::new();
    let rootfs = busybox_rootfs(root.dir.path());
    Some((root, rootfs))
}

/// Copies the shared libraries the corral binary needs into `rootfs`, at the same paths.
pub fn install_corral_libraries(rootfs: &Path) {
    install_libraries_of(Path::new(corral_bin()), rootfs);
}

/// Copies the shared libraries `program` needs into `rootfs`, at the same paths.
pub fn install_libraries_of(program: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(program).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(Path::new);
        if let Some(path) = path {
            let target = rootfs.join(path.strip_prefix("/").unwrap());
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(path, target).unwrap();
        }
    }
}

/// Runs `command` with stdout and stderr in temp files rather than pipes: a container started by
/// `create` inherits them and may outlive the command, so reading pipes to EOF would wait for it.
pub fn output_via_files(command: &mut Command) -> Output {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let status = command
        .stdin(std::process::Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .status()
        .unwrap();
    let read = |file: &mut std::fs::File| {
        use std::io::{Read, Seek};
        let mut bytes = Vec::new();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    };
    Output {
        status,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    }
}

/// A bundle in a temp dir plus a state root for it.
pub struct TestBundle {
    pub dir: tempfile::TempDir,
    pub state_root: PathBuf,
    pub id: String,
    pub config: Value,
}

impl TestBundle {
    /// A bundle whose process runs `sh -c script`, with a unique container id.
    pub fn new(name: &str, script: &str) -> TestBundle {
        let dir = tempfile::tempdir().unwrap();
        build_rootfs(&dir.path().join("rootfs"));
        let out = Command::new(corral_bin())
            .args(["oci", "spec", "--bundle"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        let state_root = dir.path().join("state");
        let id = format!("{name}-{}", std::process::id());
        TestBundle {
            dir,
            state_root,
            id,
            config,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the container a user namespace whose ids 0..65535 are host ids `host_id` on.
    pub fn map_root_to(&mut self, host_id: u32) {
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": host_id, "size": 65536}]);
        self.config["linux"]["uidMappings"] = map.clone();
        self.config["linux"]["gidMappings"] = map;
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Writes the config and runs `corral oci --root <state> ARGS...`.
    pub fn oci(&self, args: &[&str]) -> Output {
        self.save();
        let mut command = Command::new(corral_bin());
        command
            .arg("oci")
            .arg("--root")
            .arg(&self.state_root)
            .args(args);
        output_via_files(&mut command)
    }

    /// Writes config.json atomically: a running `corral oci run` may be reading it.
    pub fn save(&self) {
        let tmp = self.dir.path().join("config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
        std::fs::rename(tmp, self.dir.path().join("config.json")).unwrap();
    }

    /// `run` in the foreground; returns (exit code, stdout, stderr).
    pub fn run(&self) -> (i32, String, String) {
        let bundle = self.path().to_string_lossy().into_owned();
        let out = self.oci(&["run", "--bundle", &bundle, &self.id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `corral oci ARGS...` expecting success; returns its stdout.
    pub fn oci_ok(&self, args: &[&str]) -> String {
        let out = self.oci(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `create`, asserting it succeeds.
    pub fn create(&self) {
        let bundle = self.path().to_string_lossy().into_owned();
        self.oci_ok(&["create", "--bundle", &bundle, &self.id]);
    }

    /// `create` then `start`, asserting both succeed.
    pub fn create_and_start(&self) {
        self.create();
        self.oci_ok(&["start", &self.id]);
    }

    /// The `state` document, or `None` if the command failed.
    pub fn state(&self) -> Option<Value> {
        let out = self.oci(&["state", &self.id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn status(&self) -> String {
        self.state()
            .map(|s| s["status"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    }

    /// Polls until the status is `wanted` (10 s at most).
    pub fn wait_for_status(&self, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status() != wanted {
            assert!(
                Instant::now() < deadline,
                "container never became {wanted}; it is {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Forcibly removes the container (test cleanup).
    pub fn force_delete(&self) {
        let _ = self.oci(&["delete", "--force", &self.id]);
    }

    /// True when the container left no state directory, no cgroup directory anywhere and no
    /// mount in the host's mount table under its bundle.
    pub fn left_nothing_behind(&self) -> bool {
        if self.state_root.join(&self.id).exists() {
            return false;
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mounts.contains(&*self.path().to_string_lossy()) {
            return false;
        }
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return true;
        };
        // v1: one directory per hierarchy; v2: /sys/fs/cgroup/corral/<id> itself.
        hierarchies
            .flatten()
            .all(|h| !h.path().join("corral").join(&self.id).exists())
            && !Path::new("/sys/fs/cgroup/corral").join(&self.id).exists()
    }
}

impl Drop for TestBundle {
    /// A failed assertion must not leave a container (and its cgroup) running on the host.
    fn drop(&mut self) {
        if self.state_root.join(&self.id).exists() {
            self.force_delete();
        }
    }
}

/// A corral root in a temporary directory, and the `corral` commands run against it. Instances
/// still running when it is dropped are killed.
pub struct CorralRoot {
    pub dir: tempfile::TempDir,
    /// The network namespace every command runs in (`nsenter --net`), when not the test's own.
    pub netns: Option<String>,
}

/// A scratch directory a network's dnsmasq, which drops root, may search (not list): a corral
/// root under it keeps its own modes.
fn scratch_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

impl CorralRoot {
    pub fn new() -> CorralRoot {
        CorralRoot {
            dir: scratch_dir(),
            netns: None,
        }
    }

    /// A root whose commands (and so their supervisors) run in `netns`: what they do to links
    /// and nftables stays there.
    pub fn in_netns(netns: &corral_testkit::Netns) -> CorralRoot {
        CorralRoot {
            dir: scratch_dir(),
            netns: Some(netns.name().to_owned()),
        }
    }

    /// The corral root (a subdirectory, so tests can keep other files beside it).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = match &self.netns {
            Some(name) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net=/run/netns/{name}"))
                    .arg("--")
                    .arg(corral_bin());
                command
            }
            None => Command::new(corral_bin()),
        };
        // Instances get the nics a test names, never a `default` network made on the host.
        command
            .env("CORRAL_ROOT", self.path())
            .env("CORRAL_DEFAULT_NETWORK", "none")
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        output_via_files(&mut self.command(args))
    }

    /// Runs corral: Ok, or the first line it printed as an error (without `corral: `), what a
    /// user reads first.
    pub fn outcome(&self, args: &[&str]) -> Result<(), String> {
        let out = self.run(args);
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        Err(first.trim_start_matches("corral: ").to_owned())
    }

    /// Runs corral expecting success; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "corral {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs corral expecting an error (exit 1) or a usage error (exit 2); returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "corral {args:?} exited {:?}",
            out.status
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    pub fn info(&self, name: &str) -> Value {
        serde_json::from_str(&self.ok(&["info", name, "-o", "json"])).unwrap()
    }

    pub fn status(&self, name: &str) -> String {
        self.info(name)["state"]["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.path().join("instances").join(name)
    }
}

impl Drop for CorralRoot {
    fn drop(&mut self) {
        let list = self.run(&["list", "-o", "json"]);
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&list.stdout) {
            for item in items {
                let _ = self.run(&["kill", item["name"].as_str().unwrap_or_default()]);
            }
        }
        // A network's DHCP/DNS supervisor (and its dnsmasq) would outlive the test.
        let networks = self.run(&["network", "list", "-o", "json"]);
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&networks.stdout) {
            for item in items {
                let name = item["name"].as_str().unwrap_or_default();
                let _ = corral_netservice::stop(
                    &self.path().join("networks").join(name).join("service"),
                );
            }
        }
    }
}

/// Defines VM `name` running test guest `guest` (`guests/NAME.c`) in 32 MiB, with `extra`
/// arguments for `corral create`.
pub fn create_vm(root: &CorralRoot, name: &str, guest: &str, extra: &[&str]) {
    let kernel = corral_guests::elf(guest);
    let mut args = vec![
        "create",
        name,
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "32M",
    ];
    args.extend_from_slice(extra);
    root.ok(&args);
}

/// The names of instance `name`'s snapshots, as `corral snapshot list -o json` gives them.
pub fn snapshot_names(root: &CorralRoot, name: &str) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&root.ok(&["snapshot", "list", name, "-o", "json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Imports a VM image aliased `alias` into `root`: an empty qcow2 disk of `size` (`16M`) made in
/// `scratch`, carrying the `hello` test guest as its own kernel.
pub fn import_hello_vm_image(root: &CorralRoot, scratch: &Path, alias: &str, size: &str) {
    import_vm_image(root, scratch, alias, size, "hello");
}

/// Imports a VM image aliased `alias` into `root`: an empty qcow2 disk of `size` made in
/// `scratch`, carrying the test guest `guest` (corral_guests::elf) as its own kernel.
pub fn import_vm_image(root: &CorralRoot, scratch: &Path, alias: &str, size: &str, guest: &str) {
    let disk = scratch.join(format!("{alias}.qcow2"));
    let size: corral_vmm::config::MemorySize = size.parse().unwrap();
    corral_disk::create_qcow2(
        &disk,
        &corral_disk::Qcow2CreateOptions {
            size: Some(size.0),
            ..Default::default()
        },
    )
    .unwrap();
    let kernel = corral_guests::elf(guest);
    root.ok(&[
        "image",
        "import",
        disk.to_str().unwrap(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--alias",
        alias,
    ]);
}

/// Polls `condition` every 50 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where slow test inputs (built images, root filesystems) are kept between runs:
/// `$XDG_CACHE_HOME/corral` (`~/.cache/corral`), outside the repository.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    base.join("corral")
}

/// The SHA-256 of `bytes` in hex, by `sha256sum` (a cache key).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut sha = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sha.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = sha.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// An ext4 disk in `dir` holding the real Linux test guest (`CORRAL_GUEST_LINUX_DIR`, a
/// `guests/linux/build.sh` output) as /boot/vmlinuz-6.1-corral and its initramfs, with a grub.cfg
/// giving `guests/linux/cmdline`.
pub fn linux_boot_disk(dir: &Path) -> PathBuf {
    let Some(linux) = std::env::var_os("CORRAL_GUEST_LINUX_DIR").map(PathBuf::from) else {
        panic!("set CORRAL_GUEST_LINUX_DIR to a guests/linux/build.sh output");
    };
    let cmdline = linux::cmdline("");
    let grub = format!(
        "set default=0\nmenuentry 'Linux' {{\n linux /boot/vmlinuz-6.1-corral {}\n \
         initrd /boot/initrd.img-6.1-corral\n}}\n",
        cmdline
    );
    ext4_boot_disk(
        dir,
        &[
            ("/boot/vmlinuz-6.1-corral", &linux.join("vmlinux")),
            ("/boot/initrd.img-6.1-corral", &linux.join("initramfs.cpio")),
        ],
        &grub,
    )
}

/// A bootable ext4 image (`mkfs.ext4 -d`) `system.raw` in `dir` of `files`, `(path in the
/// disk, host file to copy)`, and a `/boot/grub/grub.cfg` of `grub_cfg`.
pub fn ext4_boot_disk(dir: &Path, files: &[(&str, &Path)], grub_cfg: &str) -> PathBuf {
    let tree = dir.join("tree");
    for (path, source) in files {
        let target = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(source, &target).unwrap();
    }
    std::fs::create_dir_all(tree.join("boot/grub")).unwrap();
    std::fs::write(tree.join("boot/grub/grub.cfg"), grub_cfg).unwrap();
    let image = dir.join("system.raw");
    corral_testkit::mkfs_ext4(&tree, &image, "64M");
    image
}
