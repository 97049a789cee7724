//! Every user-facing error the CLI can be driven into without special hardware, run from one
//! table: each prints its causes once (no line of stderr repeats another's text), never panics,
//! and names the fix where there is one.

mod common;

use std::path::Path;

use common::CorralRoot;

/// One provoked error: the arguments, and the words of the fix stderr must end with (`None`
/// where the error itself is the whole story, e.g. a damaged image).
struct Case {
    args: Vec<String>,
    fix: Option<&'static str>,
}

fn case(args: &[&str], fix: Option<&'static str>) -> Case {
    Case {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        fix,
    }
}

/// The text of each stderr line, without corral's `corral: ` / `caused by: ` prefixes.
fn lines_of(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            line.strip_prefix("corral: ")
                .or_else(|| line.strip_prefix("caused by: "))
                .unwrap_or(line)
                .to_string()
        })
        .collect()
}

/// A cause printed twice shows up as a later line whose whole text is inside an earlier one.
fn repeated_line(lines: &[String]) -> Option<(usize, usize)> {
    for (later, text) in lines.iter().enumerate().skip(1) {
        for (earlier, before) in lines[..later].iter().enumerate() {
            if before.contains(text.as_str()) {
                return Some((earlier, later));
            }
        }
    }
    None
}

fn cases(scratch: &Path) -> Vec<Case> {
    let file = |name: &str| scratch.join(name).display().to_string();
    let kernel = corral_guests::elf("hello").display().to_string();
    let bad_qcow2 = format!("path={},format=qcow2", file("bad.qcow2"));
    vec![
        // Unknown names.
        case(&["start", "nope"], Some("`corral list --all` shows")),
        case(&["delete", "nope"], Some("`corral list --all` shows")),
        case(
            &["exec", "nope", "--", "true"],
            Some("`corral list --all` shows"),
        ),
        case(
            &["volume", "delete", "nope"],
            Some("`corral volume list` shows"),
        ),
        case(
            &["network", "delete", "nope"],
            Some("`corral network list` shows"),
        ),
        case(
            &["image", "delete", "nope"],
            Some("`corral image list` shows"),
        ),
        case(&["oci", "state", "nope"], None),
        // Names taken.
        case(
            &["create", "taken", "--vm", "--kernel", &kernel],
            Some("choose another name or delete it first"),
        ),
        case(
            &["volume", "create", "v1", "--size", "1M"],
            Some("choose another name or delete it first"),
        ),
        // Bad sizes and addresses (clap's usage errors carry the expected form).
        case(
            &["volume", "create", "v2", "--size", "10Q"],
            Some("like 256M or 1G"),
        ),
        case(
            &[
                "create", "x", "--vm", "--kernel", &kernel, "--memory", "12X",
            ],
            Some("like 256M or 1G"),
        ),
        case(
            &["network", "create", "n1", "--subnet", "300.1.1.0/24"],
            Some("like 10.0.3.1/24"),
        ),
        // Missing files.
        case(
            &[
                "vmm",
                "run",
                "--kernel",
                &file("missing-vmlinux"),
                "--serial",
                "none",
            ],
            None,
        ),
        case(&["import", &file("missing.ova")], None),
        case(&["image", "import", &file("missing.tar")], None),
        case(&["define", &file("missing.toml")], None),
        // Malformed definitions and refused images.
        case(&["define", &file("bad.toml")], None),
        case(
            &["define", &file("bad-user.toml")],
            Some("e.g. 1000 or 1000:1000"),
        ),
        case(
            &["image", "import", &file("garbage")],
            Some("give --format (rootfs, oci, incus, disk or vagrant)"),
        ),
        case(
            &[
                "vmm", "run", "--kernel", &kernel, "--disk", &bad_qcow2, "--serial", "none",
            ],
            None,
        ),
        case(&["start", "badisk"], None),
        case(&["volume", "import", "v3", &file("bad.qcow2")], None),
        // Nothing running, OCI errors.
        case(
            &["vmm", "control", &file("no.sock"), "status"],
            Some("is the instance running?"),
        ),
        case(
            &["oci", "create", "--bundle", &file("no-bundle"), "c1"],
            None,
        ),
        case(
            &["stop", "taken"],
            Some("start it with `corral start taken`"),
        ),
    ]
    .into_iter()
    // CRIU's refusal, where `criu check` fails (it is checked before the bundle is read).
    .chain(corral_testkit::criu_check().is_err().then(|| {
        case(
            &[
                "oci",
                "--root",
                &file("oci-state"),
                "restore",
                "--image-path",
                &file("no-images"),
                "--bundle",
                &file("no-bundle"),
                "r1",
            ],
            Some("need a host where `criu check` passes"),
        )
    }))
    .collect()
}

#[test]
fn every_error_prints_each_cause_once_and_names_the_fix() {
    let root = CorralRoot::new();
    let scratch = tempfile::tempdir().unwrap();
    let kernel = corral_guests::elf("hello");
    // A file with qcow2's magic whose header is garbage.
    let mut bad = b"QFI\xfb\0\0\0\x03garbage".to_vec();
    bad.resize(1 << 20, 0);
    std::fs::write(scratch.path().join("bad.qcow2"), bad).unwrap();
    std::fs::write(scratch.path().join("garbage"), "hi\n").unwrap();
    std::fs::write(
        scratch.path().join("bad.toml"),
        "name = \"x\"\nmemory = 5\n[[bogus",
    )
    .unwrap();
    std::fs::write(
        scratch.path().join("bad-user.toml"),
        "name = \"u\"\ntype = \"container\"\n[container]\nrootfs = \"/\"\nuser = \"root\"\n",
    )
    .unwrap();
    let kernel = kernel.to_str().unwrap();
    root.ok(&["create", "taken", "--vm", "--kernel", kernel]);
    let disk = scratch.path().join("bad.qcow2");
    root.ok(&[
        "create",
        "badisk",
        "--vm",
        "--kernel",
        kernel,
        "--disk",
        disk.to_str().unwrap(),
    ]);
    root.ok(&["volume", "create", "v1", "--size", "1M"]);

    let mut failures = Vec::new();
    for case in cases(scratch.path()) {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let stderr = root.fails(&args);
        let lines = lines_of(&stderr);
        if lines.is_empty() {
            failures.push(format!("corral {args:?}: nothing on stderr"));
            continue;
        }
        if let Some((earlier, later)) = repeated_line(&lines) {
            failures.push(format!(
                "corral {args:?}: line {later} repeats line {earlier}:\n{stderr}"
            ));
        }
        if let Some(fix) = case.fix {
            if !stderr.contains(fix) {
                failures.push(format!(
                    "corral {args:?}: no `{fix}` in the error:\n{stderr}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_repeat_check_catches_a_cause_printed_twice() {
    let twice = lines_of(
        "corral: the VM could not run\n  caused by: disk a.qcow2: not a valid qcow2 image\n  \
         caused by: not a valid qcow2 image\n",
    );
    assert_eq!(repeated_line(&twice), Some((1, 2)));
    let once = lines_of("corral: the VM could not run\n  caused by: not a valid qcow2 image\n");
    assert_eq!(repeated_line(&once), None);
}
