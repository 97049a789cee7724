//! `/1.0/operations`: the long actions this server started.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::error::{ApiError, ErrorBody};
use crate::operations::Operation;
use crate::Api;

/// The longest a client may wait on one `wait` request.
const MAX_WAIT_SECS: u64 = 3600;

#[utoipa::path(get, path = "/1.0/operations", tag = "operations",
    responses((status = 200, description = "This server's operations, oldest first", body = Vec<Operation>)))]
pub async fn list(State(api): State<Arc<Api>>) -> Json<Vec<Operation>> {
    Json(api.operations.list())
}

#[utoipa::path(get, path = "/1.0/operations/{id}", tag = "operations",
    params(("id" = String, Path, description = "The operation's id")),
    responses((status = 200, description = "The operation", body = Operation),
              (status = 404, description = "No such operation", body = ErrorBody)))]
pub async fn get(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    Ok(Json(api.operations.get(&id)?))
}

/// `DELETE /1.0/operations/ID`: asks a running copy to stop; `wait` then shows it `cancelled`
/// (or `success` when it ended first), with what it had made undone.
#[utoipa::path(delete, path = "/1.0/operations/{id}", tag = "operations",
    params(("id" = String, Path, description = "The operation's id")),
    responses((status = 202, description = "Asked to stop; the operation as it is now", body = Operation),
              (status = 404, description = "No such operation", body = ErrorBody),
              (status = 409, description = "It has ended, or cannot be cancelled", body = ErrorBody)))]
pub async fn cancel(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Operation>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(api.operations.cancel(&id)?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait at most (default and most: an hour).
    #[param(maximum = 3600)]
    timeout: Option<u64>,
}

/// `GET /1.0/operations/ID/wait?timeout=SECS`: the operation once it has ended, or as it is
/// when the timeout passed.
#[utoipa::path(get, path = "/1.0/operations/{id}/wait", tag = "operations",
    params(("id" = String, Path, description = "The operation's id"), WaitQuery),
    responses((status = 200, description = "The operation once it ended, or after the timeout", body = Operation),
              (status = 400, description = "The query does not fit", body = ErrorBody),
              (status = 404, description = "No such operation", body = ErrorBody)))]
pub async fn wait(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<Operation>, ApiError> {
    let query = crate::body::query(query)?;
    let secs = query.timeout.unwrap_or(MAX_WAIT_SECS);
    if secs > MAX_WAIT_SECS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("timeout={secs} is more than the most a wait takes, {MAX_WAIT_SECS} seconds"),
        ));
    }
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
