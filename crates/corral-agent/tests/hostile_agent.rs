//! A guest controls its agent: fake agents that stay silent, trickle, send oversized or garbage
//! frames, or lie about a file's size must give the host one clear error, within its timeout.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use corral_agent::frame;
use corral_agent::message::{Reply, Request, PROTOCOL_VERSION};
use corral_agent::{Client, ClientError, Transport};

const TIMEOUT: Duration = Duration::from_millis(500);
/// What a test allows past the timeout before calling the client hung.
const SLACK: Duration = Duration::from_secs(2);

/// A fake agent on a socket in `dir` that runs `behave` on its one connection.
fn fake_agent(dir: &Path, behave: impl FnOnce(UnixStream) + Send + 'static) -> Transport {
    let socket = dir.join("fake.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        behave(stream);
    });
    Transport::Unix(socket)
}

/// Reads the host's hello and answers it properly.
fn greet(stream: &mut UnixStream) {
    let hello: Request = frame::read_message(stream).unwrap();
    assert_eq!(
        hello,
        Request::Hello {
            version: PROTOCOL_VERSION
        }
    );
    frame::write_message(
        stream,
        &Reply::Hello {
            version: PROTOCOL_VERSION,
            agent: "fake".to_string(),
        },
    )
    .unwrap();
}

/// Connects and pings, timing the outcome.
fn ping(transport: &Transport) -> (Result<(), ClientError>, Duration) {
    let start = Instant::now();
    let result = Client::connect(transport, TIMEOUT).and_then(|mut client| client.ping());
    (result, start.elapsed())
}

fn hold_open(stream: UnixStream) {
    std::thread::sleep(TIMEOUT * 8);
    drop(stream);
}

#[test]
fn a_silent_agent_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (result, took) = ping(&fake_agent(dir.path(), hold_open));
    let err = result.unwrap_err();
    assert!(matches!(err, ClientError::TimedOut(_)), "{err}");
    assert!(
        err.to_string().contains("did not answer within 0.5 s"),
        "{err}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?}");
}

#[test]
fn a_trickling_agent_times_out_on_the_whole_reply() {
    let dir = tempfile::tempdir().unwrap();
    let transport = fake_agent(dir.path(), |mut stream| {
        let _: Request = frame::read_message(&mut stream).unwrap();
        // A valid length, then one byte of body every 100 ms: each read is quick, the reply
        // never completes.
        let _ = stream.write_all(&100u32.to_be_bytes());
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if stream.write_all(b" ").is_err() {
                return;
            }
        }
    });
    let (result, took) = ping(&transport);
    assert!(
        matches!(result, Err(ClientError::TimedOut(_))),
        "{result:?}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?}");
}

#[test]
fn an_oversized_reply_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let transport = fake_agent(dir.path(), |mut stream| {
        greet(&mut stream);
        let _: Request = frame::read_message(&mut stream).unwrap();
        let _ = stream.write_all(&(64u32 << 20).to_be_bytes());
        hold_open(stream);
    });
    let (result, took) = ping(&transport);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ClientError::Invalid(frame::FrameError::TooLong(n)) if *n == 64 << 20),
        "{err}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?}");
}

#[test]
fn garbage_and_malformed_json_are_invalid_replies() {
    for garbage in [&b"\x07\x00\x00\x00\x01"[..], &b"\x00\x00\x00\x05{oops"[..]] {
        let dir = tempfile::tempdir().unwrap();
        let transport = fake_agent(dir.path(), move |mut stream| {
            let _: Request = frame::read_message(&mut stream).unwrap();
            let _ = stream.write_all(garbage);
            hold_open(stream);
        });
        let (result, took) = ping(&transport);
        let err = result.unwrap_err();
        assert!(matches!(err, ClientError::Invalid(_)), "{err}");
        assert!(took < TIMEOUT + SLACK, "took {took:?}");
    }
}

#[test]
fn an_agent_of_another_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let transport = fake_agent(dir.path(), |mut stream| {
        let _: Request = frame::read_message(&mut stream).unwrap();
        let reply = Reply::Hello {
            version: 2,
            agent: "future".to_string(),
        };
        frame::write_message(&mut stream, &reply).unwrap();
    });
    let err = ping(&transport).0.unwrap_err();
    assert!(matches!(err, ClientError::Version { theirs: 2 }), "{err}");
}

#[test]
fn a_wrong_answer_and_an_agent_error_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let transport = fake_agent(dir.path(), |mut stream| {
        greet(&mut stream);
        let _: Request = frame::read_message(&mut stream).unwrap();
        frame::write_message(&mut stream, &Reply::Ready).unwrap();
        let _: Request = frame::read_message(&mut stream).unwrap();
        let message = "no\u{1b}[31m luck".to_string();
        frame::write_message(&mut stream, &Reply::Error { message }).unwrap();
    });
    let mut client = Client::connect(&transport, TIMEOUT).unwrap();
    let err = client.ping().unwrap_err();
    assert!(matches!(err, ClientError::Unexpected { .. }), "{err}");
    let err = client.info().unwrap_err();
    // The guest's text is shown with its control characters escaped.
    assert_eq!(
        err.to_string(),
        "the guest agent refused: no\\u{1b}[31m luck"
    );
}

#[test]
fn a_pull_longer_than_announced_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let transport = fake_agent(dir.path(), |mut stream| {
        greet(&mut stream);
        let _: Request = frame::read_message(&mut stream).unwrap();
        let file = Reply::File {
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        frame::write_message(&mut stream, &file).unwrap();
        // Endless data.
        while frame::write_data(&mut stream, frame::Stream::Data, &[0u8; 4096]).is_ok() {}
    });
    let mut client = Client::connect(&transport, TIMEOUT).unwrap();
    let mut out = Vec::new();
    let err = client.pull("/etc/passwd", &mut out).unwrap_err();
    assert!(
        matches!(err, ClientError::SizeMismatch { announced: 10, .. }),
        "{err}"
    );
    assert!(out.len() <= 10);
}

#[test]
fn a_vsock_socket_that_refuses_the_port_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        stream.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"CONNECT 1024\n");
        // Firecracker's muxer closes a connection to a port nobody listens on.
    });
    let transport = Transport::Vsock { socket, port: 1024 };
    let err = ping(&transport).0.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[test]
fn a_vsock_answer_other_than_ok_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        stream.read_exact(&mut line).unwrap();
        stream.write_all(b"NO WAY\n").unwrap();
        hold_open(stream);
    });
    let transport = Transport::Vsock { socket, port: 1024 };
    let err = ping(&transport).0.unwrap_err();
    assert!(
        matches!(&err, ClientError::VsockRefused { port: 1024, answer } if answer == "NO WAY"),
        "{err}"
    );
}

#[test]
fn nobody_listening_is_a_connect_error_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Transport::Unix(dir.path().join("absent.sock"));
    let err = ping(&transport).0.unwrap_err();
    assert!(
        matches!(err, ClientError::Connect { .. }) && err.to_string().contains("absent.sock"),
        "{err}"
    );
}

#[test]
fn after_ok_the_vsock_stream_carries_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut line = [0u8; 13];
        stream.read_exact(&mut line).unwrap();
        stream.write_all(b"OK 1073741824\n").unwrap();
        greet(&mut stream);
        let _: Request = frame::read_message(&mut stream).unwrap();
        frame::write_message(&mut stream, &Reply::Pong).unwrap();
    });
    let transport = Transport::Vsock { socket, port: 1024 };
    ping(&transport).0.unwrap();
}

#[test]
fn a_vsock_connect_nobody_answers_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // A VMM whose guest has no vsock driver: the connection is taken, never answered.
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        hold_open(stream);
    });
    let (result, took) = ping(&Transport::Vsock { socket, port: 1024 });
    assert!(
        matches!(result, Err(ClientError::TimedOut(_))),
        "{result:?}"
    );
    assert!(took < TIMEOUT + SLACK, "took {took:?}");
}

#[test]
fn an_older_agent_that_does_not_know_a_request_is_named_so() {
    let dir = tempfile::tempdir().unwrap();
    let refusing = fake_agent(dir.path(), |mut stream| {
        greet(&mut stream);
        let _ = frame::read_frame(&mut stream).unwrap();
        let refusal = Reply::Error {
            message: "unknown request: unknown variant `fsfreeze`".to_string(),
        };
        frame::write_message(&mut stream, &refusal).unwrap();
    });
    let err = Client::connect(&refusing, TIMEOUT)
        .unwrap()
        .freeze()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::NotSupported {
                request: "fsfreeze"
            }
        ),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("install the same corral in the guest"));

    // The first agents hung up on a request they could not parse.
    let dir = tempfile::tempdir().unwrap();
    let hanging_up = fake_agent(dir.path(), |mut stream| {
        greet(&mut stream);
        let _ = frame::read_frame(&mut stream).unwrap();
    });
    let err = Client::connect(&hanging_up, TIMEOUT)
        .unwrap()
        .sysprep(None, true)
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NotSupported { request: "sysprep" }),
        "{err}"
    );
}
