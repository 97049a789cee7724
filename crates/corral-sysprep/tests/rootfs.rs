//! Identity reset of a container root directory.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use corral_sysprep::{
    sysprep_rootfs, Action, HostKeyMode, MachineIdMode, Operation, Options, SysprepError,
};
use corral_testkit::identity::{at, build_template, copy_tree, hash_tree, DbusId, FIXED_ID};
use corral_testkit::require_program;

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(at(root, path)).unwrap()
}

fn exists(root: &Path, path: &str) -> bool {
    at(root, path).symlink_metadata().is_ok()
}

fn names(root: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(at(root, dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn template(dbus: DbusId) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_template(dir.path(), dbus);
    dir
}

fn with_hostname(name: &str) -> Options {
    Options {
        hostname: Some(name.to_string()),
        ..Options::default()
    }
}

#[test]
fn every_default_item_is_reset_and_links_stay_links() {
    require_program!("ssh-keygen");
    let dir = template(DbusId::Symlink);
    let root = dir.path();
    let report = sysprep_rootfs(root, &with_hostname("clone1")).unwrap();
    assert!(!report.dry_run);

    assert_eq!(read(root, "/etc/machine-id"), "");
    let dbus = at(root, "/var/lib/dbus/machine-id");
    assert_eq!(
        std::fs::read_link(&dbus).unwrap(),
        Path::new("/etc/machine-id")
    );
    assert_eq!(
        report.of(Operation::MachineId).count(),
        1,
        "the file behind the link is truncated once: {report}"
    );

    assert_eq!(names(root, "/etc/ssh"), ["sshd_config"]);
    assert_eq!(read(root, "/etc/hostname"), "clone1\n");
    assert_eq!(
        read(root, "/etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tclone1\n::1 localhost ip6-localhost\n"
    );
    assert!(names(root, "/var/lib/dhcp").is_empty());
    assert_eq!(
        names(root, "/var/lib/NetworkManager"),
        ["NetworkManager.state"]
    );
    assert_eq!(names(root, "/etc/udev/rules.d"), ["99-local.rules"]);
    assert_eq!(
        read(root, "/etc/sysconfig/network-scripts/ifcfg-eth0"),
        "DEVICE=eth0\nONBOOT=yes\n"
    );
    let nm = "/etc/NetworkManager/system-connections/eth0.nmconnection";
    assert_eq!(read(root, nm), "[connection]\nid=eth0\n[ethernet]\n");
    let nm_mode = std::fs::metadata(at(root, nm))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(nm_mode & 0o777, 0o600, "a rewritten file keeps its mode");

    assert_eq!(
        names(root, "/var/log"),
        ["apt", "btmp", "journal", "lastlog", "syslog", "wtmp"]
    );
    for log in [
        "/var/log/syslog",
        "/var/log/wtmp",
        "/var/log/btmp",
        "/var/log/lastlog",
        "/var/log/apt/history.log",
    ] {
        assert_eq!(std::fs::metadata(at(root, log)).unwrap().len(), 0, "{log}");
    }
    let syslog_mode = std::fs::metadata(at(root, "/var/log/syslog"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(syslog_mode & 0o777, 0o640);
    assert!(names(root, "/var/log/journal").is_empty());

    assert!(!exists(root, "/root/.bash_history"));
    assert!(!exists(root, "/home/alice/.bash_history"));
    assert!(
        exists(root, "/home/alice/.ssh/authorized_keys"),
        "ssh-userdir is opt-in"
    );
    assert!(names(root, "/tmp").is_empty());
    assert!(names(root, "/var/tmp").is_empty());

    let seed = std::fs::read(at(root, "/var/lib/systemd/random-seed")).unwrap();
    let old_seed: Vec<u8> = (0..512u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(seed.len(), 512);
    assert_ne!(seed, old_seed);

    assert_eq!(names(root, "/var/lib/cloud"), ["seed"]);
    assert!(
        read(root, "/etc/fstab").contains(corral_testkit::identity::ROOT_UUID),
        "fs-uuids is opt-in"
    );
    assert!(report
        .of(Operation::Hostname)
        .any(|c| c.path == Path::new("/etc/hosts") && c.action == Action::Written));
}

#[test]
fn a_separate_dbus_machine_id_is_truncated_too() {
    require_program!("ssh-keygen");
    let dir = template(DbusId::Separate);
    let report = sysprep_rootfs(dir.path(), &Options::default()).unwrap();
    assert_eq!(read(dir.path(), "/etc/machine-id"), "");
    assert_eq!(read(dir.path(), "/var/lib/dbus/machine-id"), "");
    assert!(!at(dir.path(), "/var/lib/dbus/machine-id").is_symlink());
    assert_eq!(report.of(Operation::MachineId).count(), 2);
    assert!(report
        .of(Operation::Hostname)
        .any(|c| matches!(c.action, Action::Skipped { .. })));
}

fn public_keys(root: &Path) -> Vec<String> {
    names(root, "/etc/ssh")
        .into_iter()
        .filter(|n| n.ends_with(".pub"))
        .map(|n| read(root, &format!("/etc/ssh/{n}")))
        .collect()
}

#[test]
fn two_clones_with_new_ids_and_keys_differ_from_each_other_and_the_source() {
    require_program!("ssh-keygen");
    for dbus in [DbusId::Symlink, DbusId::Separate] {
        let source = template(dbus);
        let before = hash_tree(source.path());
        let options = Options {
            machine_id: MachineIdMode::New,
            host_keys: HostKeyMode::New,
            ..with_hostname("clone")
        };
        let clones: Vec<tempfile::TempDir> = (0..2)
            .map(|_| {
                let clone = tempfile::tempdir().unwrap();
                let root = clone.path().join("root");
                copy_tree(source.path(), &root);
                sysprep_rootfs(&root, &options).unwrap();
                clone
            })
            .collect();
        let roots: Vec<_> = clones.iter().map(|c| c.path().join("root")).collect();
        let ids: Vec<String> = roots.iter().map(|r| read(r, "/etc/machine-id")).collect();
        for (root, id) in roots.iter().zip(&ids) {
            assert_eq!(id.len(), 33, "{id:?}");
            assert_ne!(id.trim(), FIXED_ID);
            let dbus_path = at(root, "/var/lib/dbus/machine-id");
            match dbus {
                // The link's absolute target means the guest's file; the host would read its own.
                DbusId::Symlink => assert_eq!(
                    std::fs::read_link(&dbus_path).unwrap(),
                    Path::new("/etc/machine-id")
                ),
                DbusId::Separate => assert_eq!(&std::fs::read_to_string(&dbus_path).unwrap(), id),
            }
            let keys = public_keys(root);
            assert_eq!(keys.len(), 3, "rsa, ecdsa and ed25519 as the template had");
            assert!(
                keys.iter().all(|k| k.trim_end().ends_with("root@clone")),
                "{keys:?}"
            );
            for name in names(root, "/etc/ssh")
                .iter()
                .filter(|n| n.starts_with("ssh_host_"))
            {
                let mode = std::fs::metadata(at(root, &format!("/etc/ssh/{name}")))
                    .unwrap()
                    .permissions()
                    .mode();
                let expected = if name.ends_with(".pub") { 0o644 } else { 0o600 };
                assert_eq!(mode & 0o777, expected, "{name}");
            }
        }
        assert_ne!(ids[0], ids[1]);
        let (source_keys, a, b) = (
            public_keys(source.path()),
            public_keys(&roots[0]),
            public_keys(&roots[1]),
        );
        assert!(a.iter().all(|k| !b.contains(k) && !source_keys.contains(k)));
        assert!(b.iter().all(|k| !source_keys.contains(k)));
        assert_eq!(hash_tree(source.path()), before, "the source is untouched");
    }
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_it_would_do() {
    require_program!("ssh-keygen");
    let dir = template(DbusId::Separate);
    let before = hash_tree(dir.path());
    let mut options = Options {
        machine_id: MachineIdMode::New,
        host_keys: HostKeyMode::New,
        dry_run: true,
        ..with_hostname("dry")
    };
    options.operations.insert(Operation::SshUserdir);
    let report = sysprep_rootfs(dir.path(), &options).unwrap();
    assert_eq!(hash_tree(dir.path()), before);
    assert!(report.dry_run);
    let text = report.to_string();
    assert!(
        text.contains("machine-id: would write /etc/machine-id"),
        "{text}"
    );
    assert!(
        text.contains("tmp-files: would remove with its contents /tmp/build"),
        "{text}"
    );
    assert!(
        text.contains("ssh-userdir: would remove with its contents /root/.ssh"),
        "{text}"
    );
    let real = sysprep_rootfs(
        dir.path(),
        &Options {
            dry_run: false,
            ..options.clone()
        },
    )
    .unwrap();
    let paths = |r: &corral_sysprep::Report| {
        r.changes
            .iter()
            .map(|c| (c.operation, c.path.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&report),
        paths(&real),
        "the dry run lists what the run does"
    );
}

#[test]
fn hostile_symlinks_never_reach_host_files() {
    require_program!("ssh-keygen");
    // The victim's path, seen inside the root, must not pass through the guest directories the
    // hostile links below replace (a checkout under /tmp puts CARGO_TARGET_TMPDIR there).
    let replaced = ["/etc", "/var", "/tmp", "/home", "/root"];
    let place = ["/dev/shm", env!("CARGO_TARGET_TMPDIR")]
        .into_iter()
        .find(|place| Path::new(place).is_dir() && !replaced.iter().any(|r| place.starts_with(r)))
        .expect("no directory for the victim outside /etc, /var, /tmp, /home and /root");
    let host = tempfile::tempdir_in(place).unwrap();
    let victim = host.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    for name in ["hostname", "machine-id", "seed", "hosts", "keep"] {
        std::fs::write(victim.join(name), format!("host's {name}\n")).unwrap();
    }
    let victim_before = hash_tree(&victim);
    let dir = template(DbusId::Symlink);
    let root = dir.path();
    let up = "../".repeat(20);
    let v = victim.display();
    let replace = |path: &str, target: String| {
        let at = at(root, path);
        if at.is_dir() && !at.is_symlink() {
            std::fs::remove_dir_all(&at).unwrap();
        } else {
            let _ = std::fs::remove_file(&at);
        }
        symlink(target, at).unwrap();
    };
    replace("/etc/hostname", format!("/{up}{v}/hostname"));
    replace("/etc/machine-id", format!("{v}/machine-id"));
    replace("/etc/hosts", format!("{up}{v}/hosts"));
    replace("/var/lib/systemd/random-seed", format!("{up}{v}/seed"));
    replace("/var/log", "/".to_string());
    replace("/tmp", format!("{v}"));
    replace("/var/lib/dhcp", format!("{up}{v}"));
    replace("/home/alice", format!("{v}"));
    replace("/root/.bash_history", format!("{v}/keep"));
    // The same path inside the root exists: the write lands there.
    let inside = root.join(victim.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("hostname"), "guest's own\n").unwrap();
    let mut options = Options {
        machine_id: MachineIdMode::New,
        ..with_hostname("clone")
    };
    options.operations.insert(Operation::SshUserdir);
    let report = sysprep_rootfs(root, &options).unwrap();
    assert_eq!(hash_tree(&victim), victim_before, "{report}");
    // The links were followed inside the root only: dangling there, so skipped or created
    // inside, never outside; a link to a directory being emptied is left alone.
    assert_eq!(
        std::fs::read_to_string(inside.join("hostname")).unwrap(),
        "clone\n"
    );
    assert!(at(root, "/etc/hostname").is_symlink());
    assert!(at(root, "/var/log").is_symlink());
    assert!(
        exists(root, "/etc/fstab"),
        "`/var/log -> /` did not empty the guest's root"
    );
    assert!(at(root, "/tmp").is_symlink());
    assert!(
        !exists(root, "/root/.bash_history"),
        "the link itself was removed"
    );
    let skipped: Vec<_> = report
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Skipped { .. }))
        .map(|c| c.path.display().to_string())
        .collect();
    assert!(skipped.contains(&"/var/log".to_string()), "{report}");
    assert!(skipped.contains(&"/tmp".to_string()), "{report}");
}

#[test]
fn a_directory_without_etc_is_not_taken_for_a_root() {
    let dir = tempfile::tempdir().unwrap();
    let err = sysprep_rootfs(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, SysprepError::NotARoot { .. }), "{err}");
}

#[test]
fn fs_uuids_is_refused_for_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.operations.insert(Operation::FsUuids);
    let err = sysprep_rootfs(dir.path(), &options).unwrap_err();
    assert!(matches!(err, SysprepError::FsUuidsOnDirectory), "{err}");
}

#[test]
fn an_invalid_hostname_is_refused_before_anything_changes() {
    require_program!("ssh-keygen");
    let dir = template(DbusId::Symlink);
    let before = hash_tree(dir.path());
    let err = sysprep_rootfs(dir.path(), &with_hostname("bad\nname")).unwrap_err();
    assert!(matches!(err, SysprepError::InvalidHostname { .. }), "{err}");
    assert_eq!(hash_tree(dir.path()), before);
}
