//! Ending a websocket the server closes (an exec's, a console's) as RFC 6455 asks: after its
//! close frame the server reads until the client's answering close before the connection goes.
//! A server that drops the connection with client input still unread (stdin sent while the
//! command ended) makes the kernel reset it, and the client may then lose what it was sent
//! last: an exec's exit code.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Stream, StreamExt};

/// How long a client has to answer the server's close.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Reads, and drops, what the client still sends after the server's close frame, until its
/// answering close, its leaving or [`ANSWER_WAIT`].
pub async fn await_close_answer<S>(stream: &mut S)
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let answered = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(ANSWER_WAIT, answered).await;
}
