//! `GET /1.0/events`: a websocket of the server's event feed (`events.rs`), one JSON text
//! message per event. A slow client is closed with code 1008 and how many it missed; a stopping
//! server closes every client with 1001.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, ErrorBody};
use crate::Api;

/// Close codes (RFC 6455): the server is going away; the client broke the feed's policy.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

#[utoipa::path(get, path = "/1.0/events", tag = "server",
    responses((status = 101, description = "A websocket of events, one JSON text message each (docs/api.md)"),
              (status = 400, description = "Not a websocket request", body = ErrorBody)))]
pub async fn events(
    State(api): State<Arc<Api>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "/1.0/events is a websocket; connect with a websocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    Ok(upgrade.on_upgrade(move |socket| feed(api, socket)))
}

async fn feed(api: Arc<Api>, mut socket: WebSocket) {
    let mut events = api.events.subscribe();
    let close = |code, reason: String| {
        WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let mut stopping = api.events.stopping();
    if *stopping.borrow_and_update() {
        let _ = socket
            .send(close(GOING_AWAY, "the server is stopping".into()))
            .await;
        return;
    }
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(message) => {
                    let Ok(text) = serde_json::to_string(&message) else { continue };
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = format!("too slow: {missed} events missed; reconnect");
                    let _ = socket.send(close(POLICY, reason)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            // Sent once, when the server stops (or its hub is gone).
            _ = stopping.changed() => {
                let _ = socket.send(close(GOING_AWAY, "the server is stopping".into())).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                // The client's own close, or a dropped connection, ends the feed; what else it
                // sends is not read.
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
