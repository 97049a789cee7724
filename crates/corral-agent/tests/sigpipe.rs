//! An agent that hangs up must give the host an error, not SIGPIPE: corral restores SIGPIPE's
//! default action for `info`, which asks the agent. std's unix stream writes send with
//! MSG_NOSIGNAL since Rust 1.90; this test fails on a toolchain that does not. (Its own test
//! binary: the default action would kill any other test whose fake agent writes to a closed
//! connection.)

use std::io::Cursor;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use corral_agent::frame;
use corral_agent::message::{Reply, Request, PROTOCOL_VERSION};
use corral_agent::{Client, ClientError, Transport};

#[test]
fn an_agent_that_hangs_up_mid_push_is_an_error_even_with_sigpipe_at_its_default() {
    // SAFETY: restoring a signal's default action; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _: Request = frame::read_message(&mut stream).unwrap();
        let hello = Reply::Hello {
            version: PROTOCOL_VERSION,
            agent: "rude".to_string(),
        };
        frame::write_message(&mut stream, &hello).unwrap();
        let _: Request = frame::read_message(&mut stream).unwrap();
        frame::write_message(&mut stream, &Reply::Ready).unwrap();
        // Hangs up with the file's data still coming.
    });
    let mut client = Client::connect(&Transport::Unix(socket), Duration::from_secs(5)).unwrap();
    // Far more than a socket buffer: writes go on after the agent has closed.
    let data = vec![0u8; 16 * 1024 * 1024];
    let err = client
        .push(&mut Cursor::new(data), "/tmp/x", 0o644, None)
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err}");
}
