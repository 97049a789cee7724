//! `corral volume` on a temporary corral root, checked with qemu-img and qemu-io.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use corral_testkit::require_program;
use serde_json::Value;

fn corral(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .env("CORRAL_ROOT", root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = corral(root, args);
    assert!(
        out.status.success(),
        "corral {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn info(root: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(root, &["volume", "info", name, "-o", "json"])).unwrap()
}

fn pool(root: &Path) -> PathBuf {
    root.join("storage/default")
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn qemu(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ten_gib_raw_volume_is_sparse() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["volume", "create", "big", "--size", "10G"]);
    let volume = info(dir.path(), "big");
    assert_eq!(volume["virtual_size"], 10u64 << 30);
    assert!(
        volume["actual_size"].as_u64().unwrap() < 1 << 20,
        "{volume}"
    );
    let on_disk = std::fs::metadata(pool(dir.path()).join("big.raw")).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&on_disk) * 512 < 1 << 20);
    let list = ok(dir.path(), &["volume", "list"]);
    let line = list.lines().find(|l| l.starts_with("big ")).unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["big", "raw", "10.0", "GiB", "0", "B", "-"]
    );
}

/// A qcow2 overlay reads its base's data and writes only to itself, for a raw and a qcow2 base.
#[test]
fn qcow2_overlay_reads_the_base_and_writes_only_to_itself() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    for base_format in ["raw", "qcow2"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        ok(
            root,
            &[
                "volume",
                "create",
                "base",
                "--size",
                "4M",
                "--format",
                base_format,
            ],
        );
        let base = pool(root).join(format!("base.{base_format}"));
        qemu(
            "qemu-io",
            &[
                "-f",
                base_format,
                "-c",
                "write -P 0x5a 0 1M",
                base.to_str().unwrap(),
            ],
        );
        let base_sum = sha256(&base);
        ok(
            root,
            &[
                "volume",
                "create",
                "clone",
                "--format",
                "qcow2",
                "--backing",
                "base",
            ],
        );
        let clone = pool(root).join("clone.qcow2");
        let volume = info(root, "clone");
        assert_eq!(volume["virtual_size"], 4u64 << 20, "size from the base");
        assert_eq!(volume["backing_chain"].as_array().unwrap().len(), 1);

        qemu("qemu-img", &["check", clone.to_str().unwrap()]);
        let shown = qemu(
            "qemu-img",
            &["info", "--output=json", clone.to_str().unwrap()],
        );
        let shown: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(
            shown["backing-filename"],
            format!("base.{base_format}"),
            "relative, like qemu"
        );
        // Reads fall through to the base.
        qemu(
            "qemu-img",
            &["compare", base.to_str().unwrap(), clone.to_str().unwrap()],
        );
        qemu(
            "qemu-io",
            &["-c", "read -P 0x5a 0 1M", clone.to_str().unwrap()],
        );
        // Writes land in the overlay only.
        qemu(
            "qemu-io",
            &["-c", "write -P 0xc3 512k 64k", clone.to_str().unwrap()],
        );
        assert_eq!(
            sha256(&base),
            base_sum,
            "the base must not change ({base_format})"
        );
        qemu(
            "qemu-io",
            &["-c", "read -P 0xc3 512k 64k", clone.to_str().unwrap()],
        );
        qemu(
            "qemu-io",
            &["-c", "read -P 0x5a 0 512k", clone.to_str().unwrap()],
        );
        qemu("qemu-img", &["check", clone.to_str().unwrap()]);

        let out = corral(root, &["volume", "delete", "base"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use by volume clone"));
    }
}

#[test]
fn resize_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(
        root,
        &[
            "volume", "create", "disk", "--size", "1M", "--format", "qcow2",
        ],
    );
    ok(root, &["volume", "resize", "disk", "8M"]);
    assert_eq!(info(root, "disk")["virtual_size"], 8u64 << 20);
    for (args, expected) in [
        (
            vec!["volume", "create", "x"],
            "a raw volume needs a size, e.g. 10G",
        ),
        (
            vec![
                "volume",
                "create",
                "x",
                "--format",
                "raw",
                "--backing",
                "disk",
            ],
            "only qcow2 volumes",
        ),
        (
            vec!["volume", "create", "disk", "--size", "1M"],
            "volume disk already exists",
        ),
        (
            vec!["volume", "info", "missing"],
            "volume missing does not exist",
        ),
        (
            vec!["volume", "create", "d", "--format", "dir", "--size", "1M"],
            "has no size",
        ),
    ] {
        let out = corral(root, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// Reads a big-endian u64 from `path` at `offset`.
fn read_u64(path: &Path, offset: u64) -> u64 {
    let mut word = [0u8; 8];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(path).unwrap(),
        &mut word,
        offset,
    )
    .unwrap();
    u64::from_be_bytes(word)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset).unwrap();
}

#[test]
fn volume_check_reports_and_repairs_leaks_and_refuses_to_repair_corruption() {
    require_program!("qemu-img");
    require_program!("qemu-io");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(
        root,
        &[
            "volume", "create", "disk", "--size", "4M", "--format", "qcow2",
        ],
    );
    let image = pool(root).join("disk.qcow2");
    let text = image.to_str().unwrap();
    qemu("qemu-io", &["-c", "write -P 7 0 128k", text]);
    assert!(ok(root, &["volume", "check", "disk"]).contains("No errors were found"));

    // Leak the first data cluster by hand: its L2 entry goes, its refcount stays.
    let l1 = read_u64(&image, 40);
    let l2 = read_u64(&image, l1) & 0x00ff_ffff_ffff_fe00;
    let data = read_u64(&image, l2) & 0x00ff_ffff_ffff_fe00;
    write_at(&image, l2, &0u64.to_be_bytes());
    let out = corral(root, &["volume", "check", "disk"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "qemu-img check's status for leaks"
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("1 leaked clusters"), "{shown}");
    let out = corral(root, &["volume", "check", "disk", "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["leaks"].as_u64(), report["corruptions"].as_u64()),
        (Some(1), Some(0))
    );
    let out = corral(root, &["volume", "check", "disk", "--repair", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["leaks-fixed"], 1);
    qemu("qemu-img", &["check", text]);

    // A referenced cluster counted free is a corruption: reported, not repaired, fix named.
    let reftable = read_u64(&image, 48);
    let refblock = read_u64(&image, reftable) & 0x00ff_ffff_ffff_fe00;
    let l2_entry = read_u64(&image, l2 + 8) & 0x00ff_ffff_ffff_fe00;
    assert_ne!(l2_entry, data);
    write_at(&image, refblock + 2 * (l2_entry >> 16), &[0, 0]);
    let out = corral(root, &["volume", "check", "disk"]);
    assert_eq!(out.status.code(), Some(2));
    let out = corral(root, &["volume", "check", "disk", "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("qemu-img check -r all"), "{err}");
}
