//! `sysprep` through the agent's unix socket, on a root directory the test makes (the agent
//! of a guest works on `/`).

use std::path::Path;
use std::time::Duration;

use corral_agent::server::freeze::{Kernel, AUTO_THAW};
use corral_agent::server::{self, Agent, Listener};
use corral_agent::{Client, ClientError, Transport};

const TIMEOUT: Duration = Duration::from_secs(10);
const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef\n";

/// An agent whose root is `dir/root`, a small guest tree with a machine-id and host keys.
fn agent(dir: &Path) -> Transport {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/machine-id"), MACHINE_ID).unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key"), "private").unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key.pub"), "public").unwrap();
    let socket = dir.join("agent.sock");
    let listener = Listener::unix(&socket).unwrap();
    let agent = Agent::with(Box::new(Kernel), AUTO_THAW, root);
    std::thread::spawn(move || server::serve(&listener, &agent));
    Transport::Unix(socket)
}

#[test]
fn a_dry_run_reports_and_changes_nothing_then_a_real_run_resets_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let root = dir.path().join("root");
    let mut client = Client::connect(&transport, TIMEOUT).unwrap();

    let planned = client
        .sysprep(Some("machine-id,ssh-hostkeys"), true)
        .unwrap();
    let text = planned.join("\n");
    assert!(text.contains("/etc/machine-id"), "{text}");
    assert!(
        text.contains("ssh-hostkeys: would remove /etc/ssh/ssh_host_ed25519_key"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        MACHINE_ID
    );
    assert!(root.join("etc/ssh/ssh_host_ed25519_key").exists());

    let done = client
        .sysprep(Some("machine-id,ssh-hostkeys"), false)
        .unwrap();
    assert_eq!(done.len(), planned.len(), "{done:?}");
    assert!(!root.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert!(!root.join("etc/ssh/ssh_host_ed25519_key.pub").exists());
    let id = std::fs::read_to_string(root.join("etc/machine-id")).unwrap();
    assert_ne!(id, MACHINE_ID);
    assert_eq!(id.trim().len(), 32, "{id:?}");
}

#[test]
fn an_unknown_operation_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let transport = agent(dir.path());
    let err = Client::connect(&transport, TIMEOUT)
        .unwrap()
        .sysprep(Some("machine-id,no-such-operation"), true)
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(m) if m.contains("no-such-operation")),
        "{err}"
    );
}
