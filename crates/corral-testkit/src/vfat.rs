//! Reading vfat images (cloud-init CIDATA seeds) with the tools that are not corral's: mtools,
//! never a mount (the development host has no vfat).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs `program` with `args`, failing the test when it fails; returns its stdout.
pub fn run_ok(program: &str, args: &[&OsStr]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The files of a vfat image as mtools lists (`mdir -b`) and prints (`mtype`) them, sorted by
/// name.
pub fn files_in(image: &Path) -> Vec<(String, Vec<u8>)> {
    let listing = run_ok(
        "mdir",
        &[
            "-b".as_ref(),
            "-i".as_ref(),
            image.as_os_str(),
            "::".as_ref(),
        ],
    );
    let mut names: Vec<String> = listing
        .lines()
        .map(|line| line.trim_start_matches("::/").to_string())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let content = Command::new("mtype")
                .args(["-i".as_ref(), image.as_os_str()])
                .arg(format!("::{name}"))
                .output()
                .unwrap();
            assert!(content.status.success(), "mtype {name}");
            (name, content.stdout)
        })
        .collect()
}
