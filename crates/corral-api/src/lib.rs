//! corral's REST API (`corral serve`): HTTP/1.1 + JSON over a unix socket, on the same store and
//! supervisors as the CLI (both can run at once; the instance locks serialise them). Every
//! handler parses, calls `corral-core` and renders; no instance rule lives here.
//!
//! - [`routes`]: the resources under `/1.0/` (`docs/api.md`).
//! - [`openapi`]: the OpenAPI 3 document, derived from the handlers and their types.
//! - [`operations`]: long actions (create, state changes, delete) answer 202 with an operation
//!   that runs on a blocking thread and can be waited on.
//! - [`events`]: `/1.0/events`, lifecycle events, operation updates and the server's log records
//!   over a websocket.
//! - [`metrics_text`]: `/1.0/metrics` in Prometheus's text format.
//! - [`error`]: every failure is a JSON body with one sentence (the error's chain) and a status
//!   code that says whose fault it is.
//! - [`peer`]: the caller: a local uid (SO_PEERCRED), on whose behalf operations act, or a TLS
//!   client's certificate.
//! - [`auth`]: local callers may do everything; TLS clients once their certificate is trusted.
//! - [`tls`]: the server's certificate and the TLS listener (`corral serve --listen`).
//! - [`closing`]: a websocket the server closes waits for the client's answering close.
//! - [`server`]: the socket (mode 0660, group `corral` where it exists), the TLS listener and
//!   graceful shutdown.

pub mod auth;
pub mod body;
pub mod closing;
pub mod error;
pub mod events;
pub mod metrics_text;
pub mod openapi;
pub mod operations;
pub mod peer;
pub mod routes;
pub mod server;
pub mod tls;

use std::sync::Arc;

use corral_core::trust::TrustStore;
use corral_core::Manager;

pub use error::ApiError;
pub use events::EventHub;
pub use operations::Operations;
pub use routes::router;

/// What every handler shares: the instance manager, the operations it started and the event
/// feed.
pub struct Api {
    pub manager: Manager,
    pub operations: Arc<Operations>,
    pub events: Arc<EventHub>,
    /// The `default_network` of a create that gives none (`corral serve --default-network`).
    pub default_network: Option<String>,
    /// The clients trusted over TLS.
    pub trust: TrustStore,
}

impl Api {
    /// The API over `manager`, its event feed following the root's journal; a create that
    /// names no network joins `default_network` (a name or `none`; core's default when absent).
    pub fn new(manager: Manager, default_network: Option<String>) -> Arc<Api> {
        Api::with_events(manager, default_network, Arc::default())
    }

    /// [`Api::new`] publishing to `events` (a hub made before the process's logging, so its
    /// [`EventHub::log_layer`] could be installed).
    pub fn with_events(
        manager: Manager,
        default_network: Option<String>,
        events: Arc<EventHub>,
    ) -> Arc<Api> {
        let trust = TrustStore::of_root(manager.store().root());
        let api = Arc::new(Api {
            trust,
            manager,
            operations: Arc::new(Operations::reporting_to(Arc::clone(&events))),
            events: Arc::clone(&events),
            default_network,
        });
        events.follow(Arc::clone(&api));
        api
    }
}
