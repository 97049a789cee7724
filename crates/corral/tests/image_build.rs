//! `corral image build`: the example specs of `images/` built with the real binary into a
//! temporary corral root, the images they make used by containers, and the failures a build
//! must survive without touching the store. Needs root (the steps run in containers) and
//! busybox-static; the Debian examples need mmdebstrap and Debian's archive.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use common::{wait_for, CorralRoot as Root};

/// A fixed SOURCE_DATE_EPOCH: 2023-11-14T22:13:20Z.
const EPOCH: &str = "1700000000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example(name: &str) -> PathBuf {
    repo().join("images").join(name)
}

fn setup() -> Option<Root> {
    if !corral_testkit::is_root() {
        corral_testkit::skip("needs root: build steps run in containers");
        return None;
    }
    if !common::have_busybox() {
        return None;
    }
    Some(Root::new())
}

/// `corral image build` with SOURCE_DATE_EPOCH set; returns the built images (`-o json`).
fn build(root: &Root, spec: &Path, args: &[&str]) -> Vec<Value> {
    let mut command = root.command(&["image", "build", spec.to_str().unwrap(), "-o", "json"]);
    command.args(args).env("SOURCE_DATE_EPOCH", EPOCH);
    let out = common::output_via_files(&mut command);
    assert!(
        out.status.success(),
        "build of {} failed: {}",
        spec.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The store's images and every name in its directory: what a failed build must not change.
fn store_state(root: &Root) -> (String, Vec<String>) {
    let list = root.ok(&["image", "list", "-o", "json"]);
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("images"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    (list, names)
}

#[test]
fn the_busybox_example_builds_reproducibly_and_runs() {
    let Some(root) = setup() else { return };
    let spec = example("busybox.toml");
    let first_out = root.dir.path().join("first");
    let second_out = root.dir.path().join("second");
    let first = build(
        &root,
        &spec,
        &["--var", &format!("out={}", first_out.display())],
    );
    let second = build(
        &root,
        &spec,
        &["--var", &format!("out={}", second_out.display())],
    );

    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["type"], "container");
    assert_eq!(first[0]["aliases"], serde_json::json!(["busybox"]));
    assert_eq!(first[0]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        first[0]["fingerprint"], second[0]["fingerprint"],
        "two builds give the same image"
    );
    let tarball = std::fs::read(first_out.join("busybox.tar")).unwrap();
    assert!(
        tarball == std::fs::read(second_out.join("busybox.tar")).unwrap(),
        "two builds give byte-identical tarballs"
    );
    let listed: Value = serde_json::from_str(&root.ok(&["image", "list", "-o", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // The image is a busybox system container: its init runs and busybox answers.
    root.ok(&["create", "box", "--image", "busybox"]);
    let info = root.ok(&["info", "box"]);
    // A system container: stopped by its power button, its init root only in its own user
    // namespace (a new system container's default).
    assert!(info.contains("Init:         yes"), "{info}");
    assert!(info.contains("User namespace:auto"), "{info}");
    root.ok(&["start", "box"]);
    wait_for("the container's init", Duration::from_secs(10), || {
        root.run(&["exec", "box", "--", "/bin/busybox", "echo", "built-ok"])
            .stdout
            .starts_with(b"built-ok")
    });
    let motd = root.ok(&["exec", "box", "--", "/bin/cat", "/etc/motd"]);
    assert!(
        motd.contains("corral busybox"),
        "the shell step ran: {motd}"
    );
    root.ok(&["kill", "box"]);

    // The tarball output is the same tree: a container from it runs too.
    let tarball = first_out.join("busybox.tar");
    root.ok(&[
        "create",
        "fromtar",
        "--rootfs",
        tarball.to_str().unwrap(),
        "--",
        "/bin/busybox",
        "echo",
        "from-tarball",
    ]);
    root.ok(&["start", "fromtar"]);
    wait_for("the container's output", Duration::from_secs(10), || {
        root.ok(&["logs", "fromtar"]).contains("from-tarball")
    });
}

#[test]
fn a_failing_step_leaves_the_store_untouched() {
    let Some(root) = setup() else { return };
    let dir = root.dir.path().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("fails.toml");
    std::fs::write(
        &spec,
        r#"
name = "fails"
[source]
busybox = true
[[provision]]
shell = "echo first step ran"
[[provision]]
shell = "echo about to fail; exit 3"
[[output]]
type = "container"
[[output]]
type = "tarball"
path = "fails.tar"
"#,
    )
    .unwrap();
    // A store with an image already, so "unchanged" means something.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "name = \"good\"\n[source]\nbusybox = true\n[[output]]\ntype = \"container\"\n",
    )
    .unwrap();
    build(&root, &good, &[]);
    let before = store_state(&root);

    let err = root.fails(&["image", "build", spec.to_str().unwrap()]);
    assert!(
        err.contains("provisioning step 2 failed with exit status 3"),
        "{err}"
    );
    assert!(err.contains("about to fail"), "the log's last lines: {err}");
    let log = root.path().join("image-builds/fails.log");
    assert!(
        err.contains(&log.display().to_string()),
        "the error names the log: {err}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("first step ran") && logged.contains("about to fail"));

    assert_eq!(store_state(&root), before, "the store is as it was");
    assert!(!dir.join("fails.tar").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name.to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing staged remains: {leftovers:?}"
    );
}

#[test]
fn an_agent_step_installs_the_agent_binary_and_its_inittab_line() {
    let Some(root) = setup() else { return };
    let dir = root.dir.path().join("spec");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inittab"), "::sysinit:/bin/true\n").unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        r#"
name = "withagent"
[source]
busybox = true
[[provision]]
file = { source = "inittab", destination = "/etc/inittab" }
[[provision]]
agent = true
[[output]]
type = "tarball"
path = "withagent.tar"
"#,
    )
    .unwrap();
    // Any file stands for the binary: the step copies it, never runs it.
    let binary = dir.join("agent-binary");
    std::fs::write(&binary, b"not really corral").unwrap();
    let log = dir.join("build.log");
    build(
        &root,
        &dir.join("agent.toml"),
        &[
            "--agent-binary",
            binary.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
    );
    let tarball = dir.join("withagent.tar");
    let member = |path: &str| {
        let out = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(&tarball)
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{path} is not in the tarball");
        out.stdout
    };
    assert_eq!(member("usr/local/bin/corral"), b"not really corral");
    assert_eq!(
        String::from_utf8(member("etc/inittab")).unwrap(),
        "::sysinit:/bin/true\n::respawn:/usr/local/bin/corral guest agent\n"
    );
    let listing = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&tarball)
        .arg("usr/local/bin/corral")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.starts_with("-rwxr-xr-x"), "{listing}");
    // Not a static executable: the log says what the guest then needs.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("is not a static executable") && logged.contains("libseccomp"),
        "{logged}"
    );

    // A root filesystem without an init the agent can be started by fails the step, by name.
    std::fs::remove_file(dir.join("inittab")).unwrap();
    std::fs::write(
        dir.join("noinit.toml"),
        "name = \"noinit\"\n[source]\nbusybox = true\n[[provision]]\nagent = true\n\
         [[output]]\ntype = \"container\"\n",
    )
    .unwrap();
    let err = root.fails(&[
        "image",
        "build",
        dir.join("noinit.toml").to_str().unwrap(),
        "--agent-binary",
        binary.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cannot install the guest agent") && err.contains("neither systemd nor"),
        "{err}"
    );
}

#[test]
fn a_bad_spec_gives_one_sentence_naming_the_field() {
    let root = Root::new();
    let spec = root.dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        "name = \"bad\"\n[source]\nbusybox = true\n[[provision]]\nshel = \"true\"\n[[output]]\ntype = \"container\"\n",
    )
    .unwrap();
    let err = root.fails(&["image", "build", spec.to_str().unwrap()]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("line 5") && err.contains("`shel`"), "{err}");

    std::fs::write(
        &spec,
        "name = \"bad\"\n[source]\nbusybox = true\n[[output]]\ntype = \"vm\"\nsize = \"lots\"\nkernel = \"k\"\n",
    )
    .unwrap();
    let err = root.fails(&["image", "build", spec.to_str().unwrap()]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("output[1].size"), "{err}");
    assert!(!root.path().join("images").exists() || store_state(&root).1.len() <= 2);
}

/// Where a slow build's tarball output is kept between runs, keyed by the SHA-256 of the spec
/// and the files it copies (as guests/linux/build.sh caches kernels).
fn cache_dir(files: &[PathBuf]) -> PathBuf {
    let mut sha = std::process::Command::new("sha256sum");
    sha.args(files);
    let out = sha.output().unwrap();
    assert!(out.status.success());
    let digests: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect::<Vec<_>>()
        .join("\n");
    common::cache_dir()
        .join("images")
        .join(common::sha256_hex(digests.as_bytes()))
}

/// Puts the Debian 12 container example into `root`'s store as `debian-12`: built (minutes, once:
/// its tarball output is cached) or imported from the cached tarball, which gives the same image.
fn debian_12(root: &Root) {
    corral_testkit::require_program!("mmdebstrap");
    let spec = example("debian-12-container.toml");
    let cache = cache_dir(&[spec.clone(), example("debian-12/99-corral.cfg")]);
    let tarball = cache.join("debian-12.tar");
    if tarball.exists() {
        root.ok(&[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--alias",
            "debian-12",
        ]);
        return;
    }
    let out = format!("out={}", cache.display());
    let images = build(root, &spec, &["--var", &out]);
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["aliases"], serde_json::json!(["debian-12"]));
    assert_eq!(images[0]["os"], "debian");
    assert_eq!(images[0]["release"], "12");
    assert_eq!(images[0]["container"]["init"], true);
}

#[test]
#[ignore = "builds Debian 12 from Debian's archive (minutes the first time); scripts/test.sh runs it"]
fn the_debian_12_container_example_runs_sshd_and_cloud_init() {
    let Some(root) = setup() else { return };
    debian_12(&root);
    let checks = "mkdir -p /run/sshd && /usr/sbin/sshd -t && echo sshd-config-ok; \
                  cloud-init --version 2>&1; echo checks-done";
    root.ok(&[
        "create",
        "deb",
        "--image",
        "debian-12",
        "--",
        "/bin/sh",
        "-c",
        checks,
    ]);
    root.ok(&["start", "deb"]);
    wait_for("the checks", Duration::from_secs(60), || {
        root.ok(&["logs", "deb"]).contains("checks-done")
    });
    let logs = root.ok(&["logs", "deb"]);
    assert!(logs.contains("sshd-config-ok"), "{logs}");
    assert!(logs.contains("cloud-init 2"), "{logs}");
}

/// `corral exec NAME -- COMMAND`'s output, trimmed.
fn exec(root: &Root, name: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(command);
    root.ok(&args).trim().to_string()
}

/// Waits for cloud-init in system container `name` to finish its boot stages; returns
/// `/run/cloud-init/result.json`.
fn cloud_init_result(root: &Root, name: &str) -> Value {
    // cloud-final is the last stage (a oneshot that stays active): once it has run in this
    // boot, result.json is this boot's. `cloud-init status` alone says `error` as soon as an
    // earlier stage fails, and `disabled` until systemd has run cloud-init's generator.
    wait_for(
        &format!("cloud-init in {name}"),
        Duration::from_secs(240),
        || {
            let out = root.run(&[
                "exec",
                name,
                "--",
                "systemctl",
                "show",
                "--property=ActiveState",
                "cloud-final.service",
            ]);
            let state = String::from_utf8_lossy(&out.stdout);
            state.contains("=active") || state.contains("=failed")
        },
    );
    serde_json::from_str(&exec(root, name, &["cat", "/run/cloud-init/result.json"])).unwrap()
}

/// The fingerprint of `name`'s ED25519 SSH host key.
fn host_key(root: &Root, name: &str) -> String {
    exec(
        root,
        name,
        &["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"],
    )
}

#[test]
#[ignore = "builds Debian 12 from Debian's archive (minutes the first time); scripts/test.sh runs it"]
fn real_cloud_init_configures_a_debian_12_system_container_from_its_seed_once_per_instance() {
    let Some(root) = setup() else { return };
    corral_testkit::require_program!("ssh-keygen");
    debian_12(&root);
    let scratch = root.dir.path();
    let key = scratch.join("id_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "alice@corral-test",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let public_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let user_data = scratch.join("user-data");
    std::fs::write(
        &user_data,
        "#cloud-config\nruncmd:\n- [sh, -c, 'cat /var/lib/cloud/data/instance-id >> /var/tmp/runcmd-ran']\n",
    )
    .unwrap();
    root.ok(&[
        "create",
        "ci",
        "--image",
        "debian-12",
        // The cached tarball imports as a plain root filesystem: say it boots its init.
        "--init",
        "--hostname",
        "ci-host",
        "--user",
        "alice",
        "--ssh-key",
        key.with_extension("pub").to_str().unwrap(),
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    root.ok(&["start", "ci"]);
    let result = cloud_init_result(&root, "ci");
    assert_eq!(result["v1"]["errors"], serde_json::json!([]), "{result}");
    let datasource = result["v1"]["datasource"].as_str().unwrap_or_default();
    assert!(datasource.starts_with("DataSourceNoCloud"), "{result}");
    assert!(datasource.contains("seed/nocloud-net"), "{result}");
    let uuid = root.info("ci")["definition"]["uuid"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no uuid in {}", root.info("ci")));
    let instance_id = format!("iid-{uuid}");
    assert_eq!(
        exec(&root, "ci", &["cat", "/var/lib/cloud/data/instance-id"]),
        instance_id
    );
    assert_eq!(exec(&root, "ci", &["hostname"]), "ci-host");
    assert!(exec(&root, "ci", &["getent", "passwd", "alice"]).starts_with("alice:"));
    let authorized = exec(&root, "ci", &["cat", "/home/alice/.ssh/authorized_keys"]);
    assert!(authorized.contains(public_key.trim()), "{authorized}");
    assert_eq!(
        exec(&root, "ci", &["cat", "/var/tmp/runcmd-ran"]),
        instance_id
    );
    let first_key = host_key(&root, "ci");

    // The same instance again: once-per-instance modules do not run twice.
    root.ok(&["stop", "ci", "--timeout", "60"]);
    root.ok(&["start", "ci"]);
    let again = cloud_init_result(&root, "ci");
    assert_eq!(again["v1"]["errors"], serde_json::json!([]), "{again}");
    assert_eq!(
        host_key(&root, "ci"),
        first_key,
        "a restart changed the host keys"
    );
    assert_eq!(
        exec(&root, "ci", &["cat", "/var/tmp/runcmd-ran"]),
        instance_id
    );
    root.ok(&["stop", "ci", "--timeout", "60"]);

    // A clone that keeps the content but has a new UUID is a new instance to cloud-init.
    root.ok(&["clone", "ci", "ci2", "--keep-identity"]);
    root.ok(&["start", "ci2"]);
    let cloned = cloud_init_result(&root, "ci2");
    assert_eq!(cloned["v1"]["errors"], serde_json::json!([]), "{cloned}");
    let new_id = exec(&root, "ci2", &["cat", "/var/lib/cloud/data/instance-id"]);
    assert_eq!(
        new_id,
        format!(
            "iid-{}",
            root.info("ci2")["definition"]["uuid"].as_str().unwrap()
        )
    );
    // cloud-init keeps a directory per instance it has been: the source's and now the clone's.
    let instances = exec(&root, "ci2", &["ls", "/var/lib/cloud/instances"]);
    let mut instances: Vec<&str> = instances.split_whitespace().collect();
    instances.sort_unstable();
    let mut expected = vec![instance_id.as_str(), new_id.as_str()];
    expected.sort_unstable();
    assert_eq!(instances, expected);
    assert_ne!(
        host_key(&root, "ci2"),
        first_key,
        "the clone kept the host keys"
    );
    assert_eq!(
        exec(&root, "ci2", &["cat", "/var/tmp/runcmd-ran"]),
        format!("{instance_id}\n{new_id}"),
        "runcmd ran once per instance"
    );
    root.ok(&["stop", "ci2", "--timeout", "60"]);
}

#[test]
#[ignore = "builds Debian 12 and boots Linux (minutes); scripts/test.sh runs it"]
fn the_debian_12_vm_example_boots_its_own_kernel_from_its_disk_to_a_shell() {
    let Some(root) = setup() else { return };
    corral_testkit::require_kvm!();
    let Some(kernels) = std::env::var_os("CORRAL_GUEST_LINUX_DIR") else {
        corral_testkit::skip("needs CORRAL_GUEST_LINUX_DIR (bash guests/linux/build.sh DIR)");
        return;
    };
    debian_12(&root);
    let kernel = Path::new(&kernels).join("vmlinux");
    let images = build(
        &root,
        &example("debian-12-vm.toml"),
        &["--var", &format!("kernel={}", kernel.display())],
    );
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["type"], "vm");
    assert_eq!(images[0]["aliases"], serde_json::json!(["debian-12-vm"]));
    let fingerprint = images[0]["fingerprint"].as_str().unwrap();
    let disk_path = root
        .path()
        .join("images")
        .join(fingerprint)
        .join("disk.qcow2");
    // corral finds the kernel and its command line inside the disk, as a start will.
    let disk = corral_disk::open(&disk_path, corral_disk::OpenOptions::read_only()).unwrap();
    let boot = corral_image::bootdisk::find_boot(disk.as_ref()).unwrap();
    assert_eq!(boot.kernel, "/boot/vmlinuz-corral", "{boot:?}");
    assert!(boot.cmdline.contains("root=/dev/vda"), "{boot:?}");
    drop(disk);

    // A linked clone of it boots that kernel, root on its virtio disk, to a shell.
    root.ok(&[
        "create",
        "deb-vm",
        "--image",
        "debian-12-vm",
        "--memory",
        "256M",
    ]);
    let info = root.ok(&["info", "deb-vm"]);
    assert!(info.contains("linked clone"), "{info}");
    root.ok(&["start", "deb-vm"]);
    let console_log = root.instance_dir("deb-vm").join("run/console.log");
    let log = || std::fs::read_to_string(&console_log).unwrap_or_default();
    let running = || {
        let state = root.info("deb-vm")["state"].clone();
        assert_eq!(
            state["status"],
            "running",
            "the VM ended: {state}\n{}",
            log()
        );
    };
    wait_for(
        "the kernel to mount its root",
        Duration::from_secs(240),
        || {
            running();
            log().contains("VFS: Mounted root")
        },
    );
    let socket = root.instance_dir("deb-vm").join("run/console.sock");
    let mut console = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::Write;
    wait_for("the shell to answer", Duration::from_secs(120), || {
        // Typed until the shell is there to read it.
        running();
        let _ = console.write_all(b"echo shell-$((6*7)) $(cat /etc/hostname)\n");
        std::thread::sleep(Duration::from_secs(1));
        log().contains("shell-42 debian-12-vm")
    });
    // The image's agent (debian-12-container.toml's agent step), started by shell-init, answers
    // on vsock.
    wait_for("the guest agent", Duration::from_secs(120), || {
        running();
        root.run(&["agent", "ping", "deb-vm"]).status.success()
    });
    let hostname = root.ok(&["exec", "deb-vm", "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname, "debian-12-vm\n");
    // (`info`'s agent probe waits only 2 s, less than this emulated guest's agent may take to
    // gather its answer; `vmm_linux.rs` checks `info` on the Linux test guest.)
    root.ok(&["kill", "deb-vm"]);
}

#[test]
fn an_oci_output_is_a_source_that_gives_the_same_tree_back() {
    let Some(root) = setup() else { return };
    let dir = root.dir.path().join("specs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("to-oci.toml"),
        r#"
name = "bb"
[source]
busybox = true
[container]
cmd = ["/bin/echo", "from-oci"]
[[provision]]
shell = "echo hello > /etc/greeting"
[[output]]
type = "oci"
path = "bb.oci.tar"
archive = true
[[output]]
type = "tarball"
path = "first.tar"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("from-oci.toml"),
        r#"
name = "bb-again"
[source]
oci = "bb.oci.tar"
[[output]]
type = "container"
[[output]]
type = "tarball"
path = "second.tar"
"#,
    )
    .unwrap();
    assert!(build(&root, &dir.join("to-oci.toml"), &[]).is_empty());
    let images = build(&root, &dir.join("from-oci.toml"), &[]);
    assert_eq!(
        images[0]["container"]["cmd"],
        serde_json::json!(["/bin/echo", "from-oci"]),
        "the OCI config's command is the image's default"
    );
    assert!(
        std::fs::read(dir.join("first.tar")).unwrap()
            == std::fs::read(dir.join("second.tar")).unwrap(),
        "the tree came back whole"
    );
}
