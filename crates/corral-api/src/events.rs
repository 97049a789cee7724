//! The server's event feed: the root's lifecycle events (followed from the journal on a
//! blocking thread, which also notices runs that ended by themselves), this server's operation
//! updates and its own log records ([`EventHub::log_layer`]), broadcast to every `/1.0/events`
//! client in order. A client that falls [`CLIENT_BACKLOG`] messages behind is disconnected with
//! the count it missed, never left with a silent gap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corral_core::events::journal::Follower;
use corral_core::events::{LifecycleEvent, POLL_EVERY, RECONCILE_EVERY};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::operations::Operation;

/// How many messages a client may be behind before it is disconnected.
pub const CLIENT_BACKLOG: usize = 1024;

/// One message of `/1.0/events`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// An instance's life changed.
    Lifecycle { event: LifecycleEvent },
    /// An operation of this server started, moved on or ended.
    Operation { operation: Operation },
    /// The server logged something (info and above).
    Logging { record: LogRecord },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Lifecycle { .. } => Kind::Lifecycle,
            Message::Operation { .. } => Kind::Operation,
            Message::Logging { .. } => Kind::Logging,
        }
    }
}

/// The types of [`Message`], as a client of `/1.0/events?type=...` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Lifecycle,
    Operation,
    Logging,
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(name: &str) -> Result<Kind, String> {
        match name {
            "lifecycle" => Ok(Kind::Lifecycle),
            "operation" => Ok(Kind::Operation),
            "logging" => Ok(Kind::Logging),
            _ => Err(format!(
                "there is no event type {name:?}; the types are lifecycle, operation and logging"
            )),
        }
    }
}

/// One record of the server's own log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    /// `error`, `warn` or `info`.
    pub level: String,
    /// The record's text, its other fields after it as `name=value`.
    pub message: String,
}

/// The tracing layer that publishes the server's log records to its hub (filtered by whoever
/// installs it: `corral serve` takes info and above, whatever `CORRAL_LOG` says for stderr).
pub struct LogLayer {
    hub: Arc<EventHub>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut text = RecordText::default();
        event.record(&mut text);
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let record = LogRecord {
            time_ms,
            level: event.metadata().level().as_str().to_ascii_lowercase(),
            message: text.0,
        };
        self.hub.publish(Message::Logging { record });
    }
}

/// A record's fields as one line: the message, then `name=value` for each other field.
#[derive(Default)]
struct RecordText(String);

impl Visit for RecordText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let gap = if self.0.is_empty() { "" } else { " " };
        let _ = if field.name() == "message" {
            write!(self.0, "{gap}{value:?}")
        } else {
            write!(self.0, "{gap}{}={value:?}", field.name())
        };
    }
}

/// The feed: a broadcast of [`Message`]s and the signal that the server is stopping.
pub struct EventHub {
    sender: broadcast::Sender<Message>,
    stopping: watch::Sender<bool>,
    stopped: AtomicBool,
    /// The journal, read by whoever pumps (the following thread, or an operation about to
    /// report its end, so the lifecycle events it caused go out first).
    follower: Mutex<Option<Follower>>,
}

impl Default for EventHub {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(CLIENT_BACKLOG);
        let (stopping, _) = watch::channel(false);
        EventHub {
            sender,
            stopping,
            stopped: AtomicBool::new(false),
            follower: Mutex::new(None),
        }
    }
}

impl EventHub {
    /// A new client's feed, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.sender.subscribe()
    }

    /// Changes to true once the server is stopping (clients are then closed as "going away").
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The tracing layer that sends the process's log records to this hub's clients.
    pub fn log_layer(self: &Arc<Self>) -> LogLayer {
        LogLayer {
            hub: Arc::clone(self),
        }
    }

    /// Sends `message` to every client (none listening is fine).
    pub fn publish(&self, message: Message) {
        let _ = self.sender.send(message);
    }

    /// Publishes the lifecycle events journalled since the last pump.
    pub fn pump(&self) {
        let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(follower) = follower.as_mut() {
            for event in follower.poll() {
                self.publish(Message::Lifecycle { event });
            }
        }
    }

    /// Follows `api`'s root from now on, on a thread of its own until [`EventHub::stop`]:
    /// pumps every [`POLL_EVERY`] and reconciles the active instances every
    /// [`RECONCILE_EVERY`] (runs that ended by themselves).
    pub fn follow(self: &Arc<Self>, api: Arc<crate::Api>) {
        *self.follower.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(api.manager.store().events().follow());
        let hub = Arc::clone(self);
        std::thread::spawn(move || {
            let mut reconciled_at = Instant::now();
            while !hub.stopped.load(Ordering::Relaxed) {
                std::thread::sleep(POLL_EVERY);
                if reconciled_at.elapsed() >= RECONCILE_EVERY {
                    if let Err(err) = api.manager.notice_ended_runs() {
                        tracing::warn!(
                            "cannot reconcile the instances: {}",
                            corral_host::error_chain(&err)
                        );
                    }
                    reconciled_at = Instant::now();
                }
                hub.pump();
            }
        });
    }

    /// Ends the following thread and tells every client the server is going away.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.stopping.send(true);
    }

    /// Waits, up to `limit`, until every client told of the stop has let go of it (a feed
    /// once its close frame is sent): the runtime ending under them would reset them instead.
    pub async fn clients_gone(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.stopping.receiver_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
