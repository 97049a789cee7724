//! `/1.0/instances`: list, create, read, change the state of and delete instances. Reads answer
//! at once; actions answer 202 with an operation (`routes::operations`).

use std::collections::BTreeMap;
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
use corral_core::report::InstanceReport;
use corral_core::state::State as InstanceState;
use corral_core::CoreError;
use serde::{Deserialize, Serialize};

use crate::body::{query, JsonBody};
use crate::error::{ApiError, ErrorBody};
use crate::operations::Operation;
use crate::peer::Caller;
use crate::routes::blocking;
use crate::Api;

/// 202 Accepted with the operation, which `Location` names.
pub fn accepted(operation: Operation) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, operation.path())],
        Json(operation),
    )
        .into_response()
}

/// An instance an action names that does not exist is the request's 404, not a failed
/// operation.
pub async fn require_instance(api: &Arc<Api>, name: &str) -> Result<(), ApiError> {
    let (api, name) = (Arc::clone(api), name.to_owned());
    blocking(move || Ok(api.manager.state(&name).map(drop)?)).await
}

pub fn instance_path(name: &str) -> String {
    format!("/1.0/instances/{name}")
}

/// Answers 202 with an operation, described by `description`, that runs `work` on instance
/// `name` for `caller`; 404 first when there is no such instance.
pub async fn instance_operation(
    api: &Arc<Api>,
    caller: Caller,
    name: &str,
    description: String,
    work: impl FnOnce(&corral_core::Manager, &str) -> Result<(), CoreError> + Send + 'static,
) -> Result<Response, ApiError> {
    require_instance(api, name).await?;
    let (worker, target) = (Arc::clone(api), name.to_owned());
    let operation = api
        .operations
        .start(description, vec![instance_path(name)], move || {
            caller
                .acting(|| work(&worker.manager, &target))
                .map_err(ApiError::from)
        });
    Ok(accepted(operation))
}

#[utoipa::path(get, path = "/1.0/instances", tag = "instances",
    responses((status = 200, description = "Every instance", body = Vec<Summary>),
               (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn list(State(api): State<Arc<Api>>) -> Result<Json<Vec<Summary>>, ApiError> {
    Ok(Json(blocking(move || Ok(api.manager.list()?)).await?))
}

/// One instance: its definition and its state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Instance {
    /// Its `instance.toml` as JSON (docs/instances.md).
    #[schema(value_type = Object)]
    pub definition: Definition,
    pub state: InstanceState,
}

#[utoipa::path(get, path = "/1.0/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "The instance", body = Instance),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
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

#[utoipa::path(get, path = "/1.0/instances/{name}/info", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "What `corral info -o json` prints: with its supervisor's counters, nics and guest agent", body = InstanceReport),
              (status = 400, description = "Not an instance name", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn info(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<InstanceReport>, ApiError> {
    Ok(Json(
        blocking(move || Ok(api.manager.report(&name)?)).await?,
    ))
}

/// `PATCH /1.0/instances/NAME`: settings as `corral config set` takes them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// `KEY: VALUE`, e.g. `{"memory": "1G", "cpus": "2", "limits.pids": "100"}`.
    pub settings: BTreeMap<String, String>,
}

/// `PUT /1.0/instances/NAME`: a whole new definition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionReplacement {
    /// The new `instance.toml`, as `corral config edit` edits it (name, type and uuid kept).
    pub definition: String,
}

/// The instance as it now is, read after a change.
fn instance_now(api: &Api, name: &str, definition: Definition) -> Result<Instance, ApiError> {
    Ok(Instance {
        definition,
        state: api.manager.state(name)?,
    })
}

#[utoipa::path(patch, path = "/1.0/instances/{name}", tag = "instances", request_body = ConfigPatch,
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "Changed (`corral config set`); a running instance takes it at its next start", body = Instance),
              (status = 400, description = "A key it has not, or a value that does not fit", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn patch(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    JsonBody(patch): JsonBody<ConfigPatch>,
) -> Result<Json<Instance>, ApiError> {
    let settings: Vec<(String, String)> = patch.settings.into_iter().collect();
    blocking(move || {
        let definition = api.manager.set_config(&name, &settings)?;
        instance_now(&api, &name, definition).map(Json)
    })
    .await
}

#[utoipa::path(put, path = "/1.0/instances/{name}", tag = "instances", request_body = DefinitionReplacement,
    params(("name" = String, Path, description = "The instance's name")),
    responses((status = 200, description = "Replaced (`corral config edit`); a running instance takes it at its next start", body = Instance),
              (status = 400, description = "Not a definition, or one that changes the name, type or uuid", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn replace(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    JsonBody(replacement): JsonBody<DefinitionReplacement>,
) -> Result<Json<Instance>, ApiError> {
    blocking(move || {
        let new = Definition::from_toml(
            &replacement.definition,
            std::path::Path::new("instance.toml"),
        )
        .map_err(CoreError::from)?;
        let definition = api.manager.replace_definition(&name, &new)?;
        instance_now(&api, &name, definition).map(Json)
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Start the instance once it is made.
    #[serde(default)]
    start: bool,
}

/// `POST /1.0/instances[?start=true]` with a [`CreateRequest`] body.
#[utoipa::path(post, path = "/1.0/instances", tag = "instances", params(CreateQuery),
    request_body(content = CreateRequest, content_type = "application/json"),
    responses((status = 202, description = "Creating, as this operation", body = Operation),
              (status = 400, description = "The body or query does not fit", body = ErrorBody),
              (status = 413, description = "The body is over 1 MiB", body = ErrorBody)))]
pub async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    options: Result<Query<CreateQuery>, QueryRejection>,
    JsonBody(mut request): JsonBody<CreateRequest>,
) -> Result<Response, ApiError> {
    if request.default_network.is_none() {
        request.default_network.clone_from(&api.default_network);
    }
    let start = query(options)?.start;
    let name = request.instance_name()?;
    corral_core::definition::validate_name(&name).map_err(corral_core::CoreError::from)?;
    let manager = Arc::clone(&api);
    let operation = api.operations.start_tracked(
        format!("creating instance {name}"),
        vec![instance_path(&name)],
        move |tracker| {
            caller.acting(|| {
                manager.manager.create_instance(request, tracker)?;
                tracker.past_cancelling();
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

#[utoipa::path(put, path = "/1.0/instances/{name}/state", tag = "instances",
    params(("name" = String, Path, description = "The instance's name")),
    request_body(content = StateChange, content_type = "application/json"),
    responses((status = 202, description = "Changing its state, as this operation", body = Operation),
              (status = 400, description = "The body does not fit", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 413, description = "The body is over 1 MiB", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
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
    instance_operation(
        &api,
        caller,
        &name,
        format!("{verb} instance {name}"),
        move |manager, target| match (change.action, change.force) {
            (StateAction::Start, _) => manager.start(target).map(drop),
            (StateAction::Stop, false) => manager.stop(target, timeout).map(drop),
            (StateAction::Stop, true) | (StateAction::Kill, _) => manager.kill(target).map(drop),
            (StateAction::Restart, false) => manager.restart(target, timeout).map(drop),
            (StateAction::Restart, true) => manager.force_restart(target).map(drop),
            (StateAction::Pause, _) => manager.pause(target).map(drop),
            (StateAction::Resume, _) => manager.resume(target).map(drop),
        },
    )
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete a running instance too (forced off first).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/1.0/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "The instance's name"), DeleteQuery),
    responses((status = 202, description = "Deleting, as this operation", body = Operation),
              (status = 400, description = "The query does not fit", body = ErrorBody),
              (status = 404, description = "No such instance", body = ErrorBody),
              (status = 500, description = "The host failed", body = ErrorBody)))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
    options: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let force = query(options)?.force;
    let description = format!("deleting instance {name}");
    instance_operation(&api, caller, &name, description, move |manager, target| {
        manager.delete(target, force)
    })
    .await
}
