//! `/1.0/volumes`: the default storage pool's volumes (`corral volume`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use corral_control::size::MemorySize;
use corral_core::volume_request::VolumeRequest;
use corral_core::CoreError;
use serde_json::Value;

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{blocking, json};
use crate::Api;

#[utoipa::path(get, path = "/1.0/volumes", tag = "storage",
    responses((status = 200, description = "The default pool's volumes (`corral volume list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.pool().list().map_err(CoreError::from)?)).await?)
}

#[utoipa::path(post, path = "/1.0/volumes", tag = "storage", request_body = VolumeRequest,
    responses((status = 201, description = "Created (`corral volume create`): the volume as `corral volume info -o json` shows it", body = Object),
              (status = 400, description = "A bad name, or a size or backing image the format does not take", body = ErrorBody),
              (status = 404, description = "No such backing volume", body = ErrorBody),
              (status = 409, description = "A volume has that name", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn create(
    State(api): State<Arc<Api>>,
    JsonBody(request): JsonBody<VolumeRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = blocking(move || {
        Ok(api
            .manager
            .pool()
            .create_requested(&request)
            .map_err(CoreError::from)?)
    })
    .await?;
    Ok((StatusCode::CREATED, json(created)?))
}

#[utoipa::path(get, path = "/1.0/volumes/{name}", tag = "storage",
    params(("name" = String, Path, description = "The volume's name")),
    responses((status = 200, description = "The volume (`corral volume info -o json`)", body = Object),
              (status = 400, description = "Not a volume name", body = ErrorBody),
              (status = 404, description = "No such volume", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.pool().info(&name).map_err(CoreError::from)?)).await?)
}

/// `PUT /1.0/volumes/NAME`: a new virtual size.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeResize {
    pub size: MemorySize,
    /// Shrink a raw volume (what lies beyond the new size is lost).
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(put, path = "/1.0/volumes/{name}", tag = "storage", request_body = VolumeResize,
    params(("name" = String, Path, description = "The volume's name")),
    responses((status = 200, description = "Resized (`corral volume resize`)", body = Object),
              (status = 400, description = "Not a volume name, or a size it cannot take", body = ErrorBody),
              (status = 404, description = "No such volume", body = ErrorBody),
              (status = 409, description = "It is open in a running instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn resize(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    JsonBody(resize): JsonBody<VolumeResize>,
) -> Result<Json<Value>, ApiError> {
    json(
        blocking(move || {
            Ok(api
                .manager
                .pool()
                .resize(&name, resize.size.0, resize.force)
                .map_err(CoreError::from)?)
        })
        .await?,
    )
}

#[utoipa::path(delete, path = "/1.0/volumes/{name}", tag = "storage",
    params(("name" = String, Path, description = "The volume's name")),
    responses((status = 204, description = "Deleted (`corral volume delete`)"),
              (status = 400, description = "Not a volume name", body = ErrorBody),
              (status = 404, description = "No such volume", body = ErrorBody),
              (status = 409, description = "An instance or an overlay uses it", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let pool = api.manager.pool();
        api.manager.delete_volume(&pool, &name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
