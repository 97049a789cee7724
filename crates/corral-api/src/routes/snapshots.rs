//! `/1.0/instances/NAME/snapshots`: an instance's snapshots (`corral snapshot`). Taking,
//! restoring and deleting one are operations (a running instance's takes a pause, or CRIU).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use crate::body::JsonBody;
use crate::error::{ApiError, ErrorBody};
use crate::operations::Operation;
use crate::peer::Caller;
use crate::routes::instances::instance_operation;
use crate::routes::{blocking, json};
use crate::Api;

#[utoipa::path(get, path = "/1.0/instances/{name}/snapshots", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "Its snapshots (`corral snapshot list NAME -o json`)", body = Vec<Object>),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    json(blocking(move || Ok(api.manager.list_snapshots(&name)?)).await?)
}

/// `POST /1.0/instances/NAME/snapshots`.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The snapshot's name (default: the next free `snapN`).
    #[serde(default)]
    pub name: Option<String>,
}

#[utoipa::path(post, path = "/1.0/instances/{name}/snapshots", tag = "instances",
    request_body = SnapshotRequest,
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 202, description = "An operation taking the snapshot (`corral snapshot create`); a running instance's keeps its memory and devices (a VM) or processes (a container)", body = Operation),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody)))]
pub async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<SnapshotRequest>,
) -> Result<Response, ApiError> {
    let description = format!("taking a snapshot of instance {name}");
    instance_operation(&api, caller, &name, description, move |manager, target| {
        manager
            .create_snapshot(target, request.name.as_deref())
            .map(drop)
    })
    .await
}

#[utoipa::path(post, path = "/1.0/instances/{name}/snapshots/{snapshot}/restore", tag = "instances",
    params(("name" = String, Path, description = "The instance's name"),
           ("snapshot" = String, Path, description = "The snapshot's name")),
    responses((status = 202, description = "An operation restoring the instance to the snapshot (`corral snapshot restore`); a stateful snapshot's instance runs again where it was", body = Operation),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody)))]
pub async fn restore(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let description = format!("restoring instance {name} to snapshot {snapshot}");
    instance_operation(&api, caller, &name, description, move |manager, target| {
        manager.restore_snapshot(target, &snapshot).map(drop)
    })
    .await
}

#[utoipa::path(delete, path = "/1.0/instances/{name}/snapshots/{snapshot}", tag = "instances",
    params(("name" = String, Path, description = "The instance's name"),
           ("snapshot" = String, Path, description = "The snapshot's name")),
    responses((status = 202, description = "An operation deleting the snapshot (`corral snapshot delete`)", body = Operation),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((name, snapshot)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let description = format!("deleting snapshot {snapshot} of instance {name}");
    instance_operation(&api, caller, &name, description, move |manager, target| {
        manager.delete_snapshot(target, &snapshot)
    })
    .await
}
