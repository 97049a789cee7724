//! `/1.0/events` served on a real unix socket in this process: a client that stops reading is
//! sent what it can take without a gap, then disconnected with how many events it missed.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use corral_api::events::Message;
use corral_api::operations::{Operation, OperationStatus};
use corral_api::Api;
use corral_core::Manager;

fn operation(number: usize) -> Operation {
    Operation {
        id: format!("{number:016x}"),
        description: "a test operation with a description of some length".into(),
        status: OperationStatus::Running,
        resources: vec!["/1.0/instances/a".into()],
        created_at: 0,
        updated_at: 0,
        may_cancel: false,
        progress: None,
        error: None,
        error_code: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_closed_with_the_count_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::open(&dir.path().join("root"), "/nonexistent/corral".as_ref()).unwrap();
    let api = Api::new(manager, Some("none".into()));
    let socket = dir.path().join("api.sock");
    let listener = corral_api::server::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let router = corral_api::router(std::sync::Arc::clone(&api));
    tokio::spawn(async move { axum::serve(listener, router).await });

    let client = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            let stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            tungstenite::client("ws://corral/1.0/events", stream)
                .unwrap()
                .0
        })
        .await
        .unwrap()
    };
    // Subscribed once the upgrade is answered: publish far more than the backlog while the
    // client reads nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let published = corral_api::events::CLIENT_BACKLOG * 20;
    for number in 0..published {
        api.events.publish(Message::Operation {
            operation: operation(number),
        });
    }
    let (received, close) = tokio::task::spawn_blocking(move || {
        let mut client = client;
        let mut received = 0;
        loop {
            match client.read().expect("a message or the close within 30 s") {
                tungstenite::Message::Text(text) => {
                    // What was sent has no gap: the operations in order from the first.
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        message["operation"]["id"],
                        format!("{received:016x}"),
                        "message {received}"
                    );
                    received += 1;
                }
                tungstenite::Message::Close(frame) => return (received, frame.unwrap()),
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.starts_with("too slow: "), "{close:?}");
    let missed: usize = close
        .reason
        .trim_start_matches("too slow: ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(missed > 0);
    assert!(
        received + missed <= published,
        "{received} sent and {missed} missed of {published}"
    );
}
