//! The API's resources under `/1.0/` (`docs/api.md`).

pub mod certificates;
pub mod console;
pub mod events;
pub mod exec;
pub mod images;
pub mod instances;
pub mod metrics;
pub mod networks;
pub mod operations;
pub mod snapshots;
pub mod ui;
pub mod volumes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;

use crate::body::MAX_BODY_BYTES;
use crate::error::ApiError;
use crate::Api;

/// `GET /1.0`: what this server is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServerInfo {
    pub api_version: &'static str,
    pub server: &'static str,
    pub server_version: &'static str,
}

#[utoipa::path(get, path = "/1.0", tag = "server",
    responses((status = 200, description = "What this server is", body = ServerInfo)))]
pub async fn server_info() -> Json<ServerInfo> {
    Json(ServerInfo {
        api_version: "1.0",
        server: "corral",
        server_version: env!("CARGO_PKG_VERSION"),
    })
}

/// `value` as JSON (every listed type serializes).
pub fn json(value: impl Serialize) -> Result<Json<serde_json::Value>, ApiError> {
    serde_json::to_value(value).map(Json).map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {err}"),
        )
    })
}

/// Runs core's blocking `work` off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request's worker ended abnormally: {err}"),
        )
    })?
}

#[utoipa::path(get, path = "/1.0/openapi.json", tag = "server",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such resource; GET /1.0 describes the API (docs/api.md)",
    )
}

/// Every route of the API over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/1.0", get(server_info))
        .route("/1.0/openapi.json", get(openapi_json))
        .route(
            "/1.0/instances",
            get(instances::list).post(instances::create),
        )
        .route(
            "/1.0/instances/{name}",
            get(instances::get)
                .patch(instances::patch)
                .put(instances::replace)
                .delete(instances::delete),
        )
        .route("/1.0/instances/{name}/state", put(instances::change_state))
        .route("/1.0/instances/{name}/info", get(instances::info))
        .route("/1.0/instances/{name}/logs", get(console::logs))
        .route(
            "/1.0/instances/{name}/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/1.0/instances/{name}/snapshots/{snapshot}",
            delete(snapshots::delete),
        )
        .route(
            "/1.0/instances/{name}/snapshots/{snapshot}/restore",
            post(snapshots::restore),
        )
        .route("/1.0/volumes", get(volumes::list).post(volumes::create))
        .route(
            "/1.0/volumes/{name}",
            get(volumes::get)
                .put(volumes::resize)
                .delete(volumes::delete),
        )
        .route(
            "/1.0/images",
            get(images::list)
                .post(images::upload)
                // An upload streams to a file; the import bounds what it unpacks.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/1.0/images/{image}/export", get(images::export))
        .route(
            "/1.0/images/{image}",
            get(images::get).delete(images::delete),
        )
        .route("/1.0/networks", get(networks::list).post(networks::create))
        .route(
            "/1.0/networks/{network}",
            get(networks::get).delete(networks::delete),
        )
        .route("/1.0/instances/{name}/console", get(console::console))
        .route("/1.0/instances/{name}/exec", get(exec::exec))
        .route("/1.0/events", get(events::events))
        .route("/1.0/metrics", get(metrics::metrics))
        .route(
            "/1.0/certificates",
            get(certificates::list).post(certificates::add),
        )
        .route("/1.0/certificates/tokens", post(certificates::issue_token))
        .route(crate::auth::ENROL_PATH, post(certificates::enrol))
        .route("/1.0/certificates/{name}", delete(certificates::remove))
        .route("/1.0/operations", get(operations::list))
        .route(
            "/1.0/operations/{id}",
            get(operations::get).delete(operations::cancel),
        )
        .route("/1.0/operations/{id}/wait", get(operations::wait))
        .merge(ui::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&api),
            crate::auth::authorize,
        ))
        .with_state(api)
}
