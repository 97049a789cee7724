//! `/1.0/operations`: the long actions this server started.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use crate::error::ApiError;
use crate::operations::Operation;
use crate::Api;

/// The longest a client may wait on one `wait` request.
const MAX_WAIT_SECS: u64 = 3600;

pub async fn list(State(api): State<Arc<Api>>) -> Json<Vec<Operation>> {
    Json(api.operations.list())
}

pub async fn get(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    Ok(Json(api.operations.get(&id)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Seconds to wait at most (default and most: an hour).
    timeout: Option<u64>,
}

/// `GET /1.0/operations/ID/wait?timeout=SECS`: the operation once it has ended, or as it is
/// when the timeout passed.
pub async fn wait(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<Operation>, ApiError> {
    let query = crate::body::query(query)?;
    let secs = query.timeout.unwrap_or(MAX_WAIT_SECS).min(MAX_WAIT_SECS);
    // A stopping server answers at once, with the operation as it is.
    let mut stopping = api.events.stopping();
    if *stopping.borrow_and_update() {
        return Ok(Json(api.operations.get(&id)?));
    }
    tokio::select! {
        ended = api.operations.wait(&id, Duration::from_secs(secs)) => Ok(Json(ended?)),
        _ = stopping.changed() => Ok(Json(api.operations.get(&id)?)),
    }
}
