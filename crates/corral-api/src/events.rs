//! The server's event feed: the root's lifecycle events (followed from the journal on a
//! blocking thread, which also notices runs that ended by themselves) and this server's
//! operation updates, broadcast to every `/1.0/events` client in order. A client that falls
//! [`CLIENT_BACKLOG`] messages behind is disconnected with the count it missed, never left
//! with a silent gap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corral_core::events::journal::Follower;
use corral_core::events::{LifecycleEvent, POLL_EVERY, RECONCILE_EVERY};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::operations::Operation;

/// How many messages a client may be behind before it is disconnected.
pub const CLIENT_BACKLOG: usize = 1024;

/// One message of `/1.0/events`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// An instance's life changed.
    Lifecycle { event: LifecycleEvent },
    /// An operation of this server started or ended.
    Operation { operation: Operation },
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
