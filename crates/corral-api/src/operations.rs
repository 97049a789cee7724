//! Long actions as operations: a request that creates, starts, stops or deletes answers 202 at
//! once with an [`Operation`]; the work runs on a blocking thread (core's calls block) and the
//! operation says how it ended. `GET /1.0/operations/ID/wait` waits for the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::events::{EventHub, Message};

/// How many ended operations are kept for clients to read (the oldest go first).
const KEEP_ENDED: usize = 256;

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    Running,
    Success,
    Failure,
}

/// One long action, as `GET /1.0/operations/ID` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: String,
    /// What it does, e.g. "starting instance web".
    pub description: String,
    pub status: OperationStatus,
    /// The resources it acts on, as API paths.
    pub resources: Vec<String>,
    /// Seconds since the epoch.
    pub created_at: u64,
    pub updated_at: u64,
    /// Why it failed (the error's whole chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status the action's failure would have had as a direct answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u16>,
}

impl Operation {
    /// The operation's path under the API.
    pub fn path(&self) -> String {
        format!("/1.0/operations/{}", self.id)
    }
}

/// The operations of this server: running ones and the last [`KEEP_ENDED`] that ended.
#[derive(Default)]
pub struct Operations {
    next: AtomicU64,
    table: Mutex<BTreeMap<u64, watch::Sender<Operation>>>,
    /// Where each start and end is published (`/1.0/events`).
    events: Option<Arc<EventHub>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Operations {
    /// Operations whose starts and ends are published to `events`.
    pub fn reporting_to(events: Arc<EventHub>) -> Operations {
        Operations {
            events: Some(events),
            ..Operations::default()
        }
    }

    fn publish(&self, operation: &Operation) {
        if let Some(events) = &self.events {
            events.publish(Message::Operation {
                operation: operation.clone(),
            });
        }
    }

    /// Starts `work` on a blocking thread as a new operation; returns it as it is now (running).
    pub fn start(
        self: &Arc<Self>,
        description: String,
        resources: Vec<String>,
        work: impl FnOnce() -> Result<(), ApiError> + Send + 'static,
    ) -> Operation {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_secs();
        let operation = Operation {
            id: format!("{number:016x}"),
            description,
            status: OperationStatus::Running,
            resources,
            created_at: now,
            updated_at: now,
            error: None,
            error_code: None,
        };
        let (sender, _) = watch::channel(operation.clone());
        {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            table.insert(number, sender);
        }
        self.publish(&operation);
        let operations = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            operations.end(number, outcome);
        });
        operation
    }

    /// Records how operation `number` ended and forgets the oldest ended ones beyond
    /// [`KEEP_ENDED`].
    fn end(&self, number: u64, outcome: Result<(), ApiError>) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = table.get(&number) {
            sender.send_modify(|operation| {
                operation.updated_at = now_secs();
                match outcome {
                    Ok(()) => operation.status = OperationStatus::Success,
                    Err(err) => {
                        operation.status = OperationStatus::Failure;
                        operation.error = Some(err.message);
                        operation.error_code = Some(err.status.as_u16());
                    }
                }
            });
            // The lifecycle events the work caused go out before its end.
            if let Some(events) = &self.events {
                events.pump();
            }
            self.publish(&sender.borrow());
        }
        let ended: Vec<u64> = table
            .iter()
            .filter(|(_, sender)| sender.borrow().status != OperationStatus::Running)
            .map(|(number, _)| *number)
            .collect();
        for number in ended.iter().take(ended.len().saturating_sub(KEEP_ENDED)) {
            table.remove(number);
        }
    }

    /// Every operation known, oldest first.
    pub fn list(&self) -> Vec<Operation> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .values()
            .map(|sender| sender.borrow().clone())
            .collect()
    }

    /// The watch of operation `id`.
    fn watch(&self, id: &str) -> Result<watch::Receiver<Operation>, ApiError> {
        let missing = || {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("operation {id} does not exist; GET /1.0/operations lists them"),
            )
        };
        let number = u64::from_str_radix(id, 16).map_err(|_| missing())?;
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .get(&number)
            .map(watch::Sender::subscribe)
            .ok_or_else(missing)
    }

    /// Operation `id` as it is now.
    pub fn get(&self, id: &str) -> Result<Operation, ApiError> {
        Ok(self.watch(id)?.borrow().clone())
    }

    /// Operation `id` once it has ended, or as it is after `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation, ApiError> {
        let mut receiver = self.watch(id)?;
        let ended = receiver.wait_for(|operation| operation.status != OperationStatus::Running);
        let _ = tokio::time::timeout(timeout, ended).await;
        let operation = receiver.borrow().clone();
        Ok(operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn an_operation_runs_reports_its_end_and_can_be_waited_on() {
        let operations = Arc::new(Operations::default());
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let started = operations.start(
            "waiting".into(),
            vec!["/1.0/instances/a".into()],
            move || {
                gate.recv()
                    .map_err(|_| ApiError::new(StatusCode::GONE, "no go"))
            },
        );
        assert_eq!(started.status, OperationStatus::Running);
        let early = operations
            .wait(&started.id, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(
            early.status,
            OperationStatus::Running,
            "it waits for the gate"
        );
        go.send(()).unwrap();
        let ended = operations
            .wait(&started.id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ended.status, OperationStatus::Success);
        assert_eq!(operations.list(), vec![ended]);

        let failed = operations.start("failing".into(), vec![], || {
            Err(ApiError::new(StatusCode::CONFLICT, "instance a is running"))
        });
        let failed = operations
            .wait(&failed.id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(failed.status, OperationStatus::Failure);
        assert_eq!(failed.error.as_deref(), Some("instance a is running"));
        assert_eq!(failed.error_code, Some(409));
        assert_eq!(
            operations.get("zzz").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
