//! Runtime state of an instance (`state.json`) and the lifecycle state machine.
//!
//! The states are libvirt's, so admins recognise them:
//! `stopped → starting → running ⇄ paused; running → stopping → stopped; any → crashed`.

use std::time::{SystemTime, UNIX_EPOCH};

use corral_control::exit::ExitReason;
use serde::{Deserialize, Serialize};

/// Where an instance is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Stopped,
    Starting,
    Running,
    Paused,
    Stopping,
    Crashed,
}

impl Status {
    /// True while a supervisor process should exist.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Paused | Self::Stopping
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Crashed => "crashed",
        })
    }
}

/// How the last run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastExit {
    /// The supervisor's reason, or `supervisor-lost` when it recorded none.
    #[schema(value_type = String)]
    pub reason: ExitReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix time in seconds.
    pub at: u64,
}

/// The content of `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct State {
    pub status: Status,
    /// The supervisor's pid while active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The supervisor's start time in clock ticks since boot (`/proc/PID/stat` field 22), so a
    /// recycled pid is never mistaken for the supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    /// Unix time in seconds when the current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<LastExit>,
}

impl State {
    /// The state of a freshly defined instance.
    pub fn stopped() -> Self {
        Self {
            status: Status::Stopped,
            pid: None,
            pid_start_ticks: None,
            started_at: None,
            last_exit: None,
        }
    }

    /// Seconds since the current run started, while active.
    pub fn uptime_secs(&self) -> Option<u64> {
        if !self.status.is_active() {
            return None;
        }
        self.started_at.map(|t| now_secs().saturating_sub(t))
    }

    /// Ends the run: no supervisor any more, `status` with the exit recorded.
    pub fn end(&mut self, status: Status, exit: LastExit) {
        self.status = status;
        self.pid = None;
        self.pid_start_ticks = None;
        self.started_at = None;
        self.last_exit = Some(exit);
    }
}

/// Unix time now, in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub use corral_host::process::{process_alive, process_start_ticks};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_round_trips() {
        let mut state = State::stopped();
        state.status = Status::Running;
        state.pid = Some(42);
        state.started_at = Some(1000);
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"status\":\"running\""), "{json}");
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }

    #[test]
    fn our_own_process_is_alive_and_recognised() {
        let pid = std::process::id();
        let ticks = process_start_ticks(pid).expect("own start time");
        assert!(process_alive(pid, Some(ticks)));
        assert!(
            !process_alive(pid, Some(ticks + 1)),
            "a different start time is another process"
        );
    }

    #[test]
    fn dead_child_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = process_start_ticks(pid);
        child.wait().unwrap();
        assert!(!process_alive(pid, ticks));
    }

    #[test]
    fn zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: once it exits it stays a zombie until reaped.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!process_alive(pid, None));
        drop(child);
    }

    #[test]
    fn ending_a_run_clears_the_supervisor() {
        let mut state = State::stopped();
        state.status = Status::Running;
        state.pid = Some(7);
        state.started_at = Some(now_secs());
        assert!(state.uptime_secs().is_some());
        state.end(
            Status::Crashed,
            LastExit {
                reason: ExitReason::SupervisorLost,
                code: None,
                detail: None,
                at: now_secs(),
            },
        );
        assert_eq!(state.pid, None);
        assert_eq!(state.uptime_secs(), None);
    }
}
