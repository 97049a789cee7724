//! `StdioLog` rotates the file behind the process's own stderr, so it is tested in a child
//! process: this test binary runs itself with stderr on a file and a small limit.

use std::io::Write;
use std::process::{Command, Stdio};

use corral_control::log::StdioLog;

const CHILD_ENV: &str = "CORRAL_STDIO_LOG_TEST_FILE";
const LIMIT: u64 = 1000;

/// Runs in the child only: 30 records of 100 bytes, then a plain write to stderr.
#[test]
fn child_writes_records() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = StdioLog::new(path, LIMIT);
    for record in 0..30 {
        let line = format!("{record:02} {}\n", "x".repeat(96));
        log.writer().write_all(line.as_bytes()).unwrap();
    }
    eprintln!("after the last record");
}

#[test]
fn the_supervisor_log_rotates_and_stderr_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.log");
    let file = std::fs::File::create(&path).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writes_records",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let current = std::fs::read_to_string(&path).unwrap();
    let rotated = std::fs::read_to_string(dir.path().join("supervisor.log.1")).unwrap();
    // A record is checked before it is written, so a file passes the limit by at most one
    // record (plus what was written to stderr directly).
    assert!(current.len() as u64 <= LIMIT + 200, "{current}");
    assert_eq!(rotated.len() as u64, LIMIT, "{rotated}");
    assert!(current.contains("29 xxx"), "{current}");
    assert!(current.contains("after the last record"), "{current}");
    assert!(!rotated.contains("29 xxx"));
}
