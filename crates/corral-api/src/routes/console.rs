//! An instance's console: `GET /1.0/instances/NAME/logs` (what it printed, as text) and
//! `GET /1.0/instances/NAME/console`, a websocket attached to it while it runs: binary (or text)
//! messages in are typed, its output comes out as binary messages. The supervisor's console hub
//! takes one client at a time, so a second attach is refused until the first leaves.

use std::sync::Arc;

use axum::extract::ws::{
    rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade,
};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::{ApiError, ErrorBody};
use crate::routes::blocking;
use crate::Api;

#[utoipa::path(get, path = "/1.0/instances/{name}/logs", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "What its console printed, oldest first", body = String,
               content_type = "text/plain; charset=utf-8"),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn logs(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = blocking(move || Ok(api.manager.console_log(&name)?)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}

#[utoipa::path(get, path = "/1.0/instances/{name}/console", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 101, description = "A websocket attached to the console"),
              (status = 400, description = "Not a websocket request, or not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 409, description = "It is not running, or another client is attached", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn console(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let socket_path = {
        let name = name.clone();
        blocking(move || Ok(api.manager.console_socket(&name)?)).await?
    };
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the console is a websocket; connect with a websocket client ({})",
                rejection.body_text()
            ),
        )
    })?;
    // Attached before the upgrade is answered, so a refusal is an HTTP answer with a reason.
    let console = UnixStream::connect(&socket_path).await.map_err(|err| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("cannot attach to the console of instance {name}: {err}"),
        )
    })?;
    Ok(upgrade.on_upgrade(move |socket| relay(socket, console)))
}

/// Copies the websocket's input to the console and the console's output to the websocket until
/// either ends.
async fn relay(mut socket: WebSocket, console: UnixStream) {
    let (mut from_console, mut to_console) = console.into_split();
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        tokio::select! {
            read = from_console.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    let _ = socket.send(Message::Close(None)).await;
                    crate::closing::await_close_answer(&mut socket).await;
                    return;
                }
                Ok(n) => {
                    let bytes = axum::body::Bytes::copy_from_slice(&buffer[..n]);
                    if socket.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
            },
            incoming = socket.recv() => {
                let typed = match incoming {
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if to_console.write_all(&typed).await.is_err() {
                    return;
                }
            }
        }
    }
}
