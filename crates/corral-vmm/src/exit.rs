//! Why a guest stopped, and how that reaches the VMM's main thread.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use serde::Serialize;

/// Why the guest stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest powered itself off (or wrote an exit code to the debug-exit port).
    Poweroff,
    /// The guest reset itself (i8042 reset, triple fault excluded).
    Reboot,
    /// The guest crashed: triple fault, KVM internal error, failed VM entry.
    Crashed,
    /// Stopped from outside: `kill`, or a `shutdown` the guest did not honour in time.
    Killed,
    /// Migrated live: it runs on the destination VMM now.
    Migrated,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExitReason::Poweroff => "poweroff",
            ExitReason::Reboot => "reboot",
            ExitReason::Crashed => "crashed",
            ExitReason::Killed => "killed",
            ExitReason::Migrated => "migrated",
        })
    }
}

/// A request to stop the current guest, from a vCPU, a device or the control socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopEvent {
    pub reason: ExitReason,
    /// The byte the guest wrote to the debug-exit port, if that is how it stopped.
    pub guest_code: Option<u8>,
    /// What happened, for the log (a crash carries the register dump).
    pub detail: String,
}

impl StopEvent {
    pub fn new(reason: ExitReason, detail: impl Into<String>) -> StopEvent {
        StopEvent {
            reason,
            guest_code: None,
            detail: detail.into(),
        }
    }
}

/// What the VMM's main thread waits for.
pub enum VmmEvent {
    Stop(StopEvent),
    /// From the control socket: save the running guest.
    Snapshot(crate::snapshot::SnapshotRequest),
    /// From the control socket: migrate the running guest.
    Migrate(crate::migration::MigrateRequest),
}

impl From<StopEvent> for VmmEvent {
    fn from(event: StopEvent) -> VmmEvent {
        VmmEvent::Stop(event)
    }
}

/// Where stop events go: a channel of stop events, or of anything made from them (the main
/// thread's [`VmmEvent`]s). The receiver lives as long as the VMM, so a failed send only
/// happens while the process is exiting and is ignored.
#[derive(Clone)]
pub struct StopSender(Arc<dyn Fn(StopEvent) + Send + Sync>);

impl StopSender {
    pub fn new<T: From<StopEvent> + Send + 'static>(sender: Sender<T>) -> StopSender {
        StopSender(Arc::new(move |event: StopEvent| {
            let _ = sender.send(event.into());
        }))
    }

    pub fn send(&self, event: StopEvent) {
        (self.0)(event)
    }
}
