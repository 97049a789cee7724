//! `corral monitor-events`: every change of an instance's life, once and in order, whoever made
//! it (the CLI, or the container ending by itself, noticed without anyone asking).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

/// A running `corral monitor-events --output json`, its events read on a thread.
struct Monitor {
    child: Child,
    events: Receiver<Value>,
}

impl Monitor {
    fn start(root: &common::CorralRoot) -> Monitor {
        let mut child = root
            .command(&["monitor-events", "--output", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or_else(|err| {
                    panic!("monitor-events printed {line:?}, not an event: {err}")
                });
                if sender.send(event).is_err() {
                    return;
                }
            }
        });
        // It follows what is recorded after it started: give it a moment to open the journal.
        std::thread::sleep(Duration::from_millis(500));
        Monitor { child, events }
    }

    /// The next `count` events as `(instance, action, reason)`.
    fn next(&self, count: usize) -> Vec<(String, String, String)> {
        (0..count)
            .map(|_| {
                let event = self
                    .events
                    .recv_timeout(Duration::from_secs(20))
                    .expect("an event within 20 s");
                let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
                (text("instance"), text("action"), text("reason"))
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event(instance: &str, action: &str, reason: &str) -> (String, String, String) {
    (instance.into(), action.into(), reason.into())
}

#[test]
fn every_change_of_life_is_one_event_in_order() {
    if !corral_testkit::is_root() {
        return corral_testkit::skip("needs root for namespaces and cgroups");
    }
    if !common::have_busybox() {
        return;
    }
    let root = common::CorralRoot::new();
    let rootfs = root.dir.path().join("busybox");
    common::build_rootfs(&rootfs);
    // Made first, so the journal exists; the monitor sees only what comes after it started.
    root.ok(&[
        "create",
        "early",
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--",
        "true",
    ]);
    let monitor = Monitor::start(&root);

    let create = |name: &str, script: &str| {
        root.ok(&[
            "create",
            name,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
    };
    create("web", "sleep 1000");
    root.ok(&["start", "web"]);
    root.ok(&["pause", "web"]);
    root.ok(&["resume", "web"]);
    root.ok(&["stop", "web", "--timeout", "1"]);
    root.ok(&["delete", "web"]);
    assert_eq!(
        monitor.next(6),
        [
            event("web", "created", ""),
            event("web", "started", ""),
            event("web", "paused", ""),
            event("web", "resumed", ""),
            event("web", "stopped", "stopped"),
            event("web", "deleted", ""),
        ]
    );

    // Ends by itself while nobody asks about it: the monitor notices.
    create("short", "sleep 2; exit 3");
    root.ok(&["start", "short"]);
    assert_eq!(
        monitor.next(3),
        [
            event("short", "created", ""),
            event("short", "started", ""),
            event("short", "stopped", "exited"),
        ]
    );
    assert_eq!(root.status("short"), "stopped");
    // Nothing more: each change was recorded once.
    assert!(monitor.events.recv_timeout(Duration::from_secs(3)).is_err());
}
