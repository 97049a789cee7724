//! `GET /1.0/events[?type=lifecycle,operation,logging]`: a websocket of the server's event feed
//! (`events.rs`), one JSON text message per event of the types asked for (all by default). A
//! slow client is closed with code 1008 and how many it missed; a stopping server closes every
//! client with 1001.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::error::{ApiError, ErrorBody};
use crate::events::{Kind, Message};
use crate::Api;

/// Close codes (RFC 6455): the server is going away; the client broke the feed's policy.
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The types of event wanted, comma-separated: lifecycle, operation, logging (default: all).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kinds: Option<String>,
}

impl EventsQuery {
    fn kinds(&self) -> Result<Vec<Kind>, ApiError> {
        let Some(names) = &self.kinds else {
            return Ok(vec![Kind::Lifecycle, Kind::Operation, Kind::Logging]);
        };
        (names
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty()))
        .map(|name| {
            name.parse()
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
        })
        .collect()
    }
}

#[utoipa::path(get, path = "/1.0/events", tag = "server", params(EventsQuery),
    responses((status = 101, description = "A websocket of events, one JSON text message each (docs/api.md)"),
              (status = 400, description = "Not a websocket request, or an unknown type", body = ErrorBody)))]
pub async fn events(
    State(api): State<Arc<Api>>,
    options: Result<Query<EventsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let kinds = crate::body::query(options)?.kinds()?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "/1.0/events is a websocket; connect with a websocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    // Subscribed before the handshake's answer: an event published once the client holds its
    // websocket (by the client's next request, say) reaches it. Subscribing in the upgraded
    // connection's task raced with that request, and its first events could be lost.
    let events = api.events.subscribe();
    Ok(upgrade.on_upgrade(move |socket| feed(api, socket, kinds, events)))
}

async fn feed(
    api: Arc<Api>,
    mut socket: WebSocket,
    kinds: Vec<Kind>,
    mut events: tokio::sync::broadcast::Receiver<Message>,
) {
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
    let wanted = |message: &Message| {
        if !kinds.contains(&message.kind()) {
            return None;
        }
        let text = serde_json::to_string(message).ok()?;
        Some(WsMessage::Text(text.into()))
    };
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(message) => {
                    let Some(message) = wanted(&message) else { continue };
                    if socket.send(message).await.is_err() {
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
            // Sent once, when the server stops (or its hub is gone): what was published before
            // goes out first (the server's last log records).
            _ = stopping.changed() => {
                while let Ok(message) = events.try_recv() {
                    let Some(message) = wanted(&message) else { continue };
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
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
