//! `/1.0/networks`: bridges with NAT and DHCP/DNS instances attach to (`corral network`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use corral_net::networks::NetworkRequest;
use serde_json::Value;

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{blocking, json};
use crate::Api;

#[utoipa::path(get, path = "/1.0/networks", tag = "networks",
    responses((status = 200, description = "The networks (`corral network list -o json`)", body = Vec<Object>),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.network_list()?)).await?)
}

#[utoipa::path(post, path = "/1.0/networks", tag = "networks", operation_id = "create_network",
    request_body(content = Object, description = "What `corral network create` takes: `name`, and optionally `subnet` (\"10.0.3.1/24\"), `nat`, `dhcp_range` (\"FIRST-LAST\"), `domain`, `ipv6`, `dns_upstream` (addresses), `bridge`, `unmanaged`"),
    responses((status = 201, description = "Created, its bridge, NAT and DHCP/DNS service up (`corral network create`)", body = Object),
              (status = 400, description = "A bad name or setting", body = ErrorBody),
              (status = 409, description = "A network or bridge has that name", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn create(
    State(api): State<Arc<Api>>,
    JsonBody(request): JsonBody<NetworkRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let network = blocking(move || Ok(api.manager.network_create(&request)?)).await?;
    Ok((StatusCode::CREATED, json(network)?))
}

#[utoipa::path(get, path = "/1.0/networks/{network}", tag = "networks",
    params(("network" = String, Path, description = "The network's name")),
    responses((status = 200, description = "The network, its bridge and port forwards (`corral network info -o json`)", body = Object),
              (status = 400, description = "Not a network name", body = ErrorBody),
              (status = 404, description = "No such network", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.network_info(&name)?)).await?)
}

#[utoipa::path(delete, path = "/1.0/networks/{network}", tag = "networks",
    params(("network" = String, Path, description = "The network's name")),
    responses((status = 204, description = "Deleted: its bridge, rules and files (`corral network delete`)"),
              (status = 400, description = "Not a network name", body = ErrorBody),
              (status = 404, description = "No such network", body = ErrorBody),
              (status = 409, description = "An instance's nic names it", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        api.manager.network_delete(&name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
