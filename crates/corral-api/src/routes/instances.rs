//! `/1.0/instances`: list, create, read, change the state of and delete instances. Reads answer
//! at once; actions answer 202 with an operation (`routes::operations`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_core::create::CreateRequest;
use corral_core::definition::Definition;
use corral_core::lifecycle::{Summary, DEFAULT_STOP_TIMEOUT};
use corral_core::state::State as InstanceState;
use corral_image::progress::NoProgress;
use serde::{Deserialize, Serialize};

use crate::body::{query, JsonBody};
use crate::error::ApiError;
use crate::operations::Operation;
use crate::peer::Caller;
use crate::routes::blocking;
use crate::Api;

/// 202 Accepted with the operation, which `Location` names.
fn accepted(operation: Operation) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, operation.path())],
        Json(operation),
    )
        .into_response()
}

/// An instance an action names that does not exist is the request's 404, not a failed
/// operation.
async fn require_instance(api: &Arc<Api>, name: &str) -> Result<(), ApiError> {
    let (api, name) = (Arc::clone(api), name.to_owned());
    blocking(move || Ok(api.manager.state(&name).map(drop)?)).await
}

fn instance_path(name: &str) -> String {
    format!("/1.0/instances/{name}")
}

pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Vec<Summary>>, ApiError> {
    Ok(Json(blocking(move || Ok(api.manager.list()?)).await?))
}

/// One instance: its definition and its state.
#[derive(Debug, Serialize)]
pub struct Instance {
    pub definition: Definition,
    pub state: InstanceState,
}

pub async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    let instance = blocking(move || {
        let state = api.manager.state(&name)?;
        let definition = api
            .manager
            .store()
            .definition(&name)
            .map_err(corral_core::CoreError::from)?;
        Ok(Instance { definition, state })
    })
    .await?;
    Ok(Json(instance))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Start the instance once it is made.
    #[serde(default)]
    start: bool,
}

/// `POST /1.0/instances[?start=true]` with a [`CreateRequest`] body.
pub async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    options: Result<Query<CreateQuery>, QueryRejection>,
    JsonBody(request): JsonBody<CreateRequest>,
) -> Result<Response, ApiError> {
    let start = query(options)?.start;
    let Some(name) = request.name.clone() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give the instance a name (the body's \"name\")",
        ));
    };
    let manager = Arc::clone(&api);
    let operation = api.operations.start(
        format!("creating instance {name}"),
        vec![instance_path(&name)],
        move || {
            caller.acting(|| {
                manager.manager.create_instance(request, &NoProgress)?;
                if start {
                    manager.manager.start(&name)?;
                }
                Ok(())
            })
        },
    );
    Ok(accepted(operation))
}

/// What `PUT /1.0/instances/NAME/state` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateAction {
    Start,
    /// Shut down gracefully, forced off after `timeout`.
    Stop,
    Restart,
    /// Force off at once.
    Kill,
    Pause,
    Resume,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    pub action: StateAction,
    /// Seconds a graceful stop or restart may take (default: the CLI's).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Stop or restart by forcing off at once.
    #[serde(default)]
    pub force: bool,
}

pub async fn change_state(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(change): JsonBody<StateChange>,
) -> Result<Response, ApiError> {
    let timeout = change
        .timeout
        .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs);
    let verb = match change.action {
        StateAction::Start => "starting",
        StateAction::Stop => "stopping",
        StateAction::Restart => "restarting",
        StateAction::Kill => "killing",
        StateAction::Pause => "pausing",
        StateAction::Resume => "resuming",
    };
    require_instance(&api, &name).await?;
    let manager = Arc::clone(&api);
    let target = name.clone();
    let operation = api.operations.start(
        format!("{verb} instance {name}"),
        vec![instance_path(&name)],
        move || {
            let manager = &manager.manager;
            caller
                .acting(|| match (change.action, change.force) {
                    (StateAction::Start, _) => manager.start(&target).map(drop),
                    (StateAction::Stop, false) => manager.stop(&target, timeout).map(drop),
                    (StateAction::Stop, true) | (StateAction::Kill, _) => {
                        manager.kill(&target).map(drop)
                    }
                    (StateAction::Restart, false) => manager.restart(&target, timeout).map(drop),
                    (StateAction::Restart, true) => manager.force_restart(&target).map(drop),
                    (StateAction::Pause, _) => manager.pause(&target).map(drop),
                    (StateAction::Resume, _) => manager.resume(&target).map(drop),
                })
                .map_err(ApiError::from)
        },
    );
    Ok(accepted(operation))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete a running instance too (forced off first).
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    options: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let force = query(options)?.force;
    require_instance(&api, &name).await?;
    let manager = Arc::clone(&api);
    let target = name.clone();
    let operation = api.operations.start(
        format!("deleting instance {name}"),
        vec![instance_path(&name)],
        move || Ok(caller.acting(|| manager.manager.delete(&target, force))?),
    );
    Ok(accepted(operation))
}
