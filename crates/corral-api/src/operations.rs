//! Long actions as operations: a request that creates, starts, stops or deletes answers 202 at
//! once with an [`Operation`]; the work runs on a blocking thread (core's calls block) and the
//! operation says how it ended. `GET /1.0/operations/ID/wait` waits for the end. Work that
//! copies (an instance made from an image) reports its progress through a [`Tracker`] and can
//! be cancelled (`DELETE /1.0/operations/ID`): its copies stop at their next step and undo what
//! they made.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use corral_image::progress::Progress;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::events::{EventHub, Message};

/// How many ended operations are kept for clients to read (the oldest go first).
const KEEP_ENDED: usize = 256;
/// The most often an operation's progress is published as an event.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    Running,
    Success,
    Failure,
    /// Stopped by `DELETE /1.0/operations/ID`; what it had made is undone.
    Cancelled,
}

impl OperationStatus {
    /// The status as JSON spells it.
    fn word(self) -> &'static str {
        match self {
            OperationStatus::Running => "running",
            OperationStatus::Success => "success",
            OperationStatus::Failure => "failure",
            OperationStatus::Cancelled => "cancelled",
        }
    }
}

/// How far an operation's current phase is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OperationProgress {
    /// What it does now, e.g. "copying the disk".
    pub phase: String,
    /// Bytes handled in this phase.
    pub done: u64,
    /// Bytes the phase handles, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
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
    /// Whether `DELETE /1.0/operations/ID` can stop it.
    pub may_cancel: bool,
    /// Its current phase, for work that reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,
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

/// The progress and cancel switch of one operation, handed to its work as the [`Progress`] of
/// core's long calls (only an operation that `may_cancel` is ever cancelled).
pub struct Tracker {
    operation: watch::Sender<Operation>,
    events: Option<Arc<EventHub>>,
    cancel: AtomicBool,
    /// The current phase, and when it was last published.
    phase: Mutex<(OperationProgress, Option<Instant>)>,
}

impl Tracker {
    /// Publishes the phase into the operation (and as an event) when `force`d or not done for
    /// [`REPORT_EVERY`].
    fn report(&self, phase: &mut (OperationProgress, Option<Instant>), force: bool) {
        if !force && phase.1.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        phase.1 = Some(Instant::now());
        self.operation.send_modify(|operation| {
            operation.progress = Some(phase.0.clone());
            operation.updated_at = now_secs();
        });
        if let Some(events) = &self.events {
            let operation = self.operation.borrow().clone();
            events.publish(Message::Operation { operation });
        }
    }
}

impl Tracker {
    /// Ends the part of the work that can be cancelled (a create's copy, before its start):
    /// a cancel asked for later is refused, one asked for earlier came too late.
    pub fn past_cancelling(&self) {
        let _phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        self.cancel.store(false, Ordering::Relaxed);
        self.operation
            .send_modify(|operation| operation.may_cancel = false);
    }
}

impl Progress for Tracker {
    fn begin(&self, what: &str, total: Option<u64>) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        phase.0 = OperationProgress {
            phase: what.to_owned(),
            done: 0,
            total,
        };
        self.report(&mut phase, true);
    }

    fn advance(&self, bytes: u64) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        phase.0.done = phase.0.done.saturating_add(bytes);
        self.report(&mut phase, false);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One operation of the table: its watch and its tracker.
struct Entry {
    operation: watch::Sender<Operation>,
    tracker: Arc<Tracker>,
}

impl Entry {
    /// The operation as it is now: its progress read from the tracker, not its last report.
    fn now(&self) -> Operation {
        self.now_in(&self.tracker.phase.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// [`Entry::now`] with the tracker's `phase` already locked.
    fn now_in(&self, phase: &(OperationProgress, Option<Instant>)) -> Operation {
        let mut operation = self.operation.borrow().clone();
        if operation.status == OperationStatus::Running && phase.1.is_some() {
            operation.progress = Some(phase.0.clone());
        }
        operation
    }
}

/// The operations of this server: running ones and the last [`KEEP_ENDED`] that ended.
#[derive(Default)]
pub struct Operations {
    next: AtomicU64,
    table: Mutex<BTreeMap<u64, Entry>>,
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
        self.launch(description, resources, false, move |_| work())
    }

    /// Starts `work` as [`Operations::start`] does, handing it a [`Tracker`] for its progress:
    /// the operation can be cancelled, and ends `cancelled` when the work fails after that.
    pub fn start_tracked(
        self: &Arc<Self>,
        description: String,
        resources: Vec<String>,
        work: impl FnOnce(&Tracker) -> Result<(), ApiError> + Send + 'static,
    ) -> Operation {
        self.launch(description, resources, true, work)
    }

    fn launch(
        self: &Arc<Self>,
        description: String,
        resources: Vec<String>,
        may_cancel: bool,
        work: impl FnOnce(&Tracker) -> Result<(), ApiError> + Send + 'static,
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
            may_cancel,
            progress: None,
            error: None,
            error_code: None,
        };
        let (sender, _) = watch::channel(operation.clone());
        let tracker = Arc::new(Tracker {
            operation: sender.clone(),
            events: self.events.clone(),
            cancel: AtomicBool::new(false),
            phase: Mutex::new((OperationProgress::default(), None)),
        });
        {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            let entry = Entry {
                operation: sender,
                tracker: Arc::clone(&tracker),
            };
            table.insert(number, entry);
        }
        self.publish(&operation);
        let operations = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let outcome = work(&tracker);
            operations.end(number, outcome, tracker.cancelled());
        });
        operation
    }

    /// Records how operation `number` ended (`cancelled` when its cancel was asked for) and
    /// forgets the oldest ended ones beyond [`KEEP_ENDED`].
    fn end(&self, number: u64, outcome: Result<(), ApiError>, cancelled: bool) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = table.get(&number) {
            entry.operation.send_modify(|operation| {
                operation.updated_at = now_secs();
                operation.may_cancel = false;
                match outcome {
                    Ok(()) => operation.status = OperationStatus::Success,
                    Err(err) if cancelled => {
                        tracing::info!("{} was cancelled: {}", operation.description, err.message);
                        operation.status = OperationStatus::Cancelled;
                        operation.error = Some(err.message);
                    }
                    Err(err) => {
                        tracing::warn!("{} failed: {}", operation.description, err.message);
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
            self.publish(&entry.operation.borrow());
        }
        let ended: Vec<u64> = table
            .iter()
            .filter(|(_, entry)| entry.operation.borrow().status != OperationStatus::Running)
            .map(|(number, _)| *number)
            .collect();
        for number in ended.iter().take(ended.len().saturating_sub(KEEP_ENDED)) {
            table.remove(number);
        }
    }

    /// Every operation known, oldest first.
    pub fn list(&self) -> Vec<Operation> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.values().map(Entry::now).collect()
    }

    /// What `work` makes of operation `id`'s entry.
    fn with_entry<T>(&self, id: &str, work: impl FnOnce(&Entry) -> T) -> Result<T, ApiError> {
        let missing = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("operation {id} does not exist; GET /1.0/operations lists them"),
            )
        };
        let number = u64::from_str_radix(id, 16).map_err(|_| missing())?;
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.get(&number).map(work).ok_or_else(missing)
    }

    /// The watch of operation `id`.
    fn watch(&self, id: &str) -> Result<watch::Receiver<Operation>, ApiError> {
        self.with_entry(id, |entry| entry.operation.subscribe())
    }

    /// Asks running operation `id` to stop; returns it as it is now (still running: `wait` for
    /// its end). Refused for one that has ended or cannot be cancelled.
    pub fn cancel(&self, id: &str) -> Result<Operation, ApiError> {
        self.with_entry(id, |entry| {
            // Under the phase's lock, so `past_cancelling` is wholly before or after.
            let _phase = entry
                .tracker
                .phase
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let operation = entry.operation.borrow().clone();
            match (operation.status, operation.may_cancel) {
                (OperationStatus::Running, true) => {
                    entry.tracker.cancel.store(true, Ordering::Relaxed);
                    Ok(operation)
                }
                (OperationStatus::Running, false) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "operation {id} ({}) cannot be cancelled (now): only copies, such as an \
                         instance made from an image, can; wait for it to end",
                        operation.description
                    ),
                )),
                (status, _) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "operation {id} ({}) has already ended: {}",
                        operation.description,
                        status.word()
                    ),
                )),
            }
        })?
    }

    /// Operation `id` as it is now.
    pub fn get(&self, id: &str) -> Result<Operation, ApiError> {
        self.with_entry(id, Entry::now)
    }

    /// Operation `id` once it has ended, or as it is after `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation, ApiError> {
        let mut receiver = self.watch(id)?;
        let ended = receiver.wait_for(|operation| operation.status != OperationStatus::Running);
        let _ = tokio::time::timeout(timeout, ended).await;
        self.get(id)
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

    #[tokio::test]
    async fn a_tracked_operation_reports_progress_and_stops_when_cancelled() {
        let operations = Arc::new(Operations::default());
        let (phase_begun, begun) = std::sync::mpsc::channel::<()>();
        let copying = operations.start_tracked("copying".into(), vec![], move |tracker| {
            tracker.begin("copying the disk", Some(100));
            tracker.advance(40);
            let _ = phase_begun.send(());
            while !tracker.cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "copy cancelled",
            ))
        });
        assert!(copying.may_cancel);
        tokio::task::spawn_blocking(move || begun.recv())
            .await
            .unwrap()
            .unwrap();
        let progress = operations.get(&copying.id).unwrap().progress.unwrap();
        assert_eq!(progress.phase, "copying the disk");
        assert_eq!((progress.done, progress.total), (40, Some(100)));

        let asked = operations.cancel(&copying.id).unwrap();
        assert_eq!(asked.status, OperationStatus::Running);
        let ended = operations
            .wait(&copying.id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ended.status, OperationStatus::Cancelled);
        assert_eq!(ended.error.as_deref(), Some("copy cancelled"));
        assert!(!ended.may_cancel);
        let again = operations.cancel(&copying.id).unwrap_err();
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(
            again.message.contains("has already ended: cancelled"),
            "{}",
            again.message
        );

        // Work that is not a copy, or whose copy is done, runs to its end.
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let starting = operations.start("starting".into(), vec![], move || {
            let _ = gate.recv();
            Ok(())
        });
        assert!(!starting.may_cancel);
        let refused = operations.cancel(&starting.id).unwrap_err();
        assert_eq!(refused.status, StatusCode::CONFLICT);
        assert!(
            refused.message.contains("cannot be cancelled"),
            "{}",
            refused.message
        );
        go.send(()).unwrap();
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let created = operations.start_tracked("creating".into(), vec![], move |tracker| {
            tracker.past_cancelling();
            let _ = gate.recv();
            Ok(())
        });
        let wait_past = |id: String| {
            let operations = Arc::clone(&operations);
            async move {
                while operations.get(&id).unwrap().may_cancel {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        wait_past(created.id.clone()).await;
        assert_eq!(
            operations.cancel(&created.id).unwrap_err().status,
            StatusCode::CONFLICT
        );
        go.send(()).unwrap();
        let ended = operations
            .wait(&created.id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(ended.status, OperationStatus::Success);
    }
}
