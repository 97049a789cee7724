//! The root's other resources, read-only for now: storage pool volumes, images, networks and an
//! instance's snapshots, each as the CLI's `--output json` shows them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use crate::error::{ApiError, ErrorBody};
use crate::routes::blocking;
use crate::Api;

/// `value` as JSON (every listed type serializes).
fn json(value: impl serde::Serialize) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value).map(Json).map_err(|err| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {err}"),
        )
    })
}

#[utoipa::path(get, path = "/1.0/volumes", tag = "storage",
    responses((status = 200, description = "The default pool's volumes (`corral volume list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn volumes(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(
        blocking(move || {
            Ok(api
                .manager
                .pool()
                .list()
                .map_err(corral_core::CoreError::from)?)
        })
        .await?,
    )
}

#[utoipa::path(get, path = "/1.0/images", tag = "images",
    responses((status = 200, description = "The image store (`corral image list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn images(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(
        blocking(move || {
            Ok(api
                .manager
                .images()?
                .list()
                .map_err(corral_core::CoreError::from)?)
        })
        .await?,
    )
}

#[utoipa::path(get, path = "/1.0/networks", tag = "networks",
    responses((status = 200, description = "The networks (`corral network list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn networks(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.network_list()?)).await?)
}

#[utoipa::path(get, path = "/1.0/instances/{name}/snapshots", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "Its snapshots (`corral snapshot list NAME -o json`)", body = Vec<Object>),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn snapshots(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.list_snapshots(&name)?)).await?)
}
