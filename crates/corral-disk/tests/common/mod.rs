//! Helpers shared by the integration tests: qemu-img/qemu-io runners and deterministic patterns.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::Command;

use corral_disk::{Disk, OpenOptions};

/// Runs a qemu tool, asserting success; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a qemu tool; returns whether it succeeded, and its combined output.
pub fn run_status(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `qemu-img create -q -f qcow2 ARGS...`.
pub fn qemu_img_create(args: &[&str]) {
    let mut all = vec!["create", "-q", "-f", "qcow2"];
    all.extend_from_slice(args);
    run("qemu-img", &all);
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `qemu-img check` must report a clean image.
pub fn assert_qemu_check_clean(image: &Path) {
    let (ok, text) = run_status("qemu-img", &["check", path_str(image)]);
    assert!(ok, "qemu-img check failed for {}:\n{text}", image.display());
    assert!(
        text.contains("No errors were found"),
        "qemu-img check:\n{text}"
    );
}

/// `qemu-img compare` of an image's content against a raw file of the same size.
pub fn assert_qemu_compare(image: &Path, format: &str, expected_raw: &Path) {
    assert_qemu_compare_formats(image, format, expected_raw, "raw");
}

/// `qemu-img compare` of two images' contents.
pub fn assert_qemu_compare_formats(
    image: &Path,
    format: &str,
    expected: &Path,
    expected_format: &str,
) {
    let (ok, text) = run_status(
        "qemu-img",
        &[
            "compare",
            "-f",
            format,
            "-F",
            expected_format,
            path_str(image),
            path_str(expected),
        ],
    );
    assert!(ok, "qemu-img compare {}: {text}", image.display());
    assert!(
        text.contains("Images are identical"),
        "qemu-img compare: {text}"
    );
}

/// Bytes that differ with position and seed, so misplaced data never matches by accident.
pub fn pattern(offset: u64, length: usize, seed: u8) -> Vec<u8> {
    (0..length as u64)
        .map(|i| {
            let position = offset + i;
            (position ^ (position >> 8) ^ (position >> 16)).wrapping_mul(31) as u8 ^ seed
        })
        .collect()
}

/// Reads the whole virtual disk through corral.
pub fn read_all(disk: &dyn Disk) -> Vec<u8> {
    let mut data = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut data, 0).expect("read whole disk");
    data
}

/// Reads an image through corral with format detection.
pub fn corral_read_all(path: &Path) -> Vec<u8> {
    let disk = corral_disk::open(path, OpenOptions::read_only()).expect("open image");
    read_all(disk.as_ref())
}

/// qemu's own view of an image's content, via `qemu-img convert` to raw.
pub fn qemu_read_all(image: &Path, scratch: &Path) -> Vec<u8> {
    let out = scratch.join(format!(
        "qemu-view-{}.raw",
        image
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("image")
    ));
    let _ = std::fs::remove_file(&out);
    run(
        "qemu-img",
        &["convert", "-O", "raw", path_str(image), path_str(&out)],
    );
    let data = std::fs::read(&out).expect("read qemu's conversion");
    std::fs::remove_file(&out).expect("remove qemu's conversion");
    data
}

/// Asserts equality of two disk contents, reporting the first differing offset rather than
/// megabytes of bytes.
pub fn assert_same_content(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: sizes differ");
    if let Some(offset) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at offset {offset}: {} != {}",
            actual[offset], expected[offset]
        );
    }
}

/// `qemu-img check --output=json`: its exit code (0 clean, 2 corruptions, 3 only leaks) and
/// report.
pub fn qemu_check_json(image: &Path) -> (Option<i32>, serde_json::Value) {
    let output = Command::new("qemu-img")
        .args(["check", "--output=json", path_str(image)])
        .output()
        .unwrap_or_else(|err| panic!("cannot run qemu-img: {err}"));
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "qemu-img check {}: {err}: {}{}",
            image.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

/// corral's check and `qemu-img check` agree on the image's leaks, corruptions, allocated
/// clusters and end offset; returns corral's report.
pub fn assert_check_agrees_with_qemu(image: &Path) -> corral_disk::CheckReport {
    let (_, qemu) = qemu_check_json(image);
    let ours = corral_disk::check(image)
        .unwrap_or_else(|err| panic!("corral's check of {}: {err}", image.display()));
    let field = |name: &str| qemu[name].as_u64().unwrap_or(0);
    assert_eq!(
        (
            ours.leaks,
            ours.corruptions,
            ours.allocated_clusters,
            ours.total_clusters
        ),
        (
            field("leaks"),
            field("corruptions"),
            field("allocated-clusters"),
            field("total-clusters")
        ),
        "corral's check of {} disagrees with qemu-img's {qemu:#}\ncorral's: {ours:#?}",
        image.display()
    );
    ours
}
