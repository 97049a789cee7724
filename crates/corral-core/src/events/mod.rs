//! Lifecycle events: each change of an instance's life (created, started, paused, resumed,
//! stopped with its reason, crashed, migrated away, deleted) recorded once, in order, in the
//! corral root's event journal ([`journal`]), whoever caused it: a CLI command, the API server,
//! the guest powering itself off (noticed when the state is next reconciled; a follower
//! reconciles every instance every few seconds, [`Manager::notice_ended_runs`]). The store
//! records them as it saves states, so no path that changes a state can forget one.

pub mod journal;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::{State, Status};
use crate::{CoreError, Manager};
use corral_control::exit::ExitReason;

/// What happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Started,
    Paused,
    Resumed,
    /// Its run ended (`reason` says how: powered off, rebooted, stopped, failed ...).
    Stopped,
    /// Its run ended in a crash (or its supervisor died).
    Crashed,
    /// It was migrated live and runs on another host now.
    Migrated,
    Deleted,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Started => "started",
            Action::Paused => "paused",
            Action::Resumed => "resumed",
            Action::Stopped => "stopped",
            Action::Crashed => "crashed",
            Action::Migrated => "migrated",
            Action::Deleted => "deleted",
        })
    }
}

/// Who the events a thread causes are attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Actor {
    /// This process's user (a CLI command).
    Process,
    /// Another user this process acts for (the API server's caller, by SO_PEERCRED).
    Uid(u32),
    /// Nobody: a run noticed to have ended by itself.
    Nobody,
}

thread_local! {
    static ACTOR: std::cell::Cell<Actor> = const { std::cell::Cell::new(Actor::Process) };
}

fn acting_as<T>(actor: Actor, work: impl FnOnce() -> T) -> T {
    let before = ACTOR.replace(actor);
    let result = work();
    ACTOR.set(before);
    result
}

/// `work`, a closure that runs `work` on another thread with the events it causes attributed as
/// this thread's are (the API caller's stays theirs when a verb fans out to threads).
pub(crate) fn as_this_thread<T>(work: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let actor = ACTOR.get();
    move || acting_as(actor, work)
}

/// Runs `work` with the lifecycle events it causes on this thread attributed to user `uid`.
pub fn on_behalf_of<T>(uid: u32, work: impl FnOnce() -> T) -> T {
    acting_as(Actor::Uid(uid), work)
}

/// Runs `work` with the lifecycle events it causes on this thread attributed to nobody (what
/// reconciling finds happened by itself).
pub(crate) fn unattributed<T>(work: impl FnOnce() -> T) -> T {
    acting_as(Actor::Nobody, work)
}

/// One event, as the journal and `/1.0/events` carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LifecycleEvent {
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    pub instance: String,
    pub action: Action,
    /// The user who caused it: the CLI's, or the API caller's; none for what happened by
    /// itself (a guest that powered off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// How a run ended (with `stopped`, `crashed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<ExitReason>,
    /// The exit's detail (an exit code's meaning, why a start failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl LifecycleEvent {
    pub fn now(instance: &str, action: Action) -> LifecycleEvent {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let uid = match ACTOR.get() {
            Actor::Process => Some(nix::unistd::getuid().as_raw()),
            Actor::Uid(uid) => Some(uid),
            Actor::Nobody => None,
        };
        LifecycleEvent {
            time_ms,
            instance: instance.to_owned(),
            action,
            uid,
            reason: None,
            detail: None,
        }
    }

    /// The event instance `name`'s state changing from `before` to `after` is, if any (a
    /// change within a run, such as a supervisor's pid recorded, is none).
    pub fn of_change(name: &str, before: &State, after: &State) -> Option<LifecycleEvent> {
        use Status::*;
        let action = match (before.status, after.status) {
            (Running, Paused) => Action::Paused,
            (Paused, Running) => Action::Resumed,
            (from, Running | Paused) if !matches!(from, Running | Paused | Stopping) => {
                Action::Started
            }
            (from, Crashed) if from != Crashed => Action::Crashed,
            (from, Stopped) if from.is_active() => {
                match after.last_exit.as_ref().map(|exit| &exit.reason) {
                    Some(ExitReason::Migrated) => Action::Migrated,
                    _ => Action::Stopped,
                }
            }
            _ => return None,
        };
        let mut event = LifecycleEvent::now(name, action);
        if matches!(action, Action::Stopped | Action::Crashed) {
            if let Some(exit) = &after.last_exit {
                event.reason = Some(exit.reason.clone());
                event.detail = exit.detail.clone();
            }
        }
        Some(event)
    }
}

/// How often a watch reads the journal.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often a watch reconciles the active instances (runs that ended by themselves).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// The lifecycle events of a corral root as they happen ([`Manager::watch_events`]).
pub struct EventWatch<'a> {
    manager: &'a Manager,
    follower: journal::Follower,
    reconciled_at: Instant,
}

impl EventWatch<'_> {
    /// The events since the last call, waiting [`POLL_EVERY`] first; every
    /// [`RECONCILE_EVERY`] the active instances are reconciled, so a run that ended by itself
    /// shows up without anyone asking about it.
    pub fn next_batch(&mut self) -> Vec<LifecycleEvent> {
        std::thread::sleep(POLL_EVERY);
        if self.reconciled_at.elapsed() >= RECONCILE_EVERY {
            if let Err(err) = self.manager.notice_ended_runs() {
                tracing::warn!(
                    "cannot reconcile the instances: {}",
                    corral_host::error_chain(&err)
                );
            }
            self.reconciled_at = Instant::now();
        }
        self.follower.poll()
    }
}

impl Manager {
    /// Watches the lifecycle events recorded from now on.
    pub fn watch_events(&self) -> EventWatch<'_> {
        EventWatch {
            manager: self,
            follower: self.store().events().follow(),
            reconciled_at: Instant::now(),
        }
    }

    /// Reconciles every active instance whose lock is free, so runs that ended by themselves
    /// (a guest that powered off, a crash) are recorded, with their events, now rather than
    /// when someone next looks.
    pub fn notice_ended_runs(&self) -> Result<(), CoreError> {
        for name in self.store().names()? {
            match self.store().state(&name) {
                Ok(state) if state.status.is_active() => {
                    // Gone meanwhile, or busy: the command working on it records what it does.
                    let _ = self.state(&name);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LastExit;

    fn state(status: Status, reason: Option<ExitReason>) -> State {
        State {
            status,
            last_exit: reason.map(|reason| LastExit {
                reason,
                code: None,
                detail: Some("why".into()),
                at: 1,
            }),
            ..State::stopped()
        }
    }

    #[test]
    fn each_change_of_life_is_one_event_and_changes_within_a_run_are_none() {
        let change = |from, to, reason| {
            LifecycleEvent::of_change("a", &state(from, None), &state(to, reason))
                .map(|event| (event.action, event.reason))
        };
        use Status::*;
        assert_eq!(
            change(Starting, Running, None),
            Some((Action::Started, None))
        );
        assert_eq!(
            change(Stopped, Running, None),
            Some((Action::Started, None))
        );
        assert_eq!(change(Running, Paused, None), Some((Action::Paused, None)));
        assert_eq!(change(Paused, Running, None), Some((Action::Resumed, None)));
        assert_eq!(
            change(Stopping, Stopped, Some(ExitReason::Stopped)),
            Some((Action::Stopped, Some(ExitReason::Stopped)))
        );
        assert_eq!(
            change(Running, Crashed, Some(ExitReason::Crashed)),
            Some((Action::Crashed, Some(ExitReason::Crashed)))
        );
        assert_eq!(
            change(Running, Stopped, Some(ExitReason::Migrated)),
            Some((Action::Migrated, None))
        );
        assert_eq!(change(Running, Running, None), None);
        assert_eq!(change(Running, Stopping, None), None);
        assert_eq!(
            change(Stopping, Running, None),
            None,
            "a restart within a run"
        );
        assert_eq!(change(Stopped, Starting, None), None);
        assert_eq!(change(Stopped, Stopped, None), None);
    }
}

#[cfg(test)]
mod actor_tests {
    use super::*;

    #[test]
    fn events_name_who_caused_them() {
        let own = nix::unistd::getuid().as_raw();
        assert_eq!(LifecycleEvent::now("a", Action::Created).uid, Some(own));
        let theirs = on_behalf_of(4242, || LifecycleEvent::now("a", Action::Started).uid);
        assert_eq!(theirs, Some(4242));
        let nobody = on_behalf_of(4242, || {
            unattributed(|| LifecycleEvent::now("a", Action::Stopped).uid)
        });
        assert_eq!(nobody, None);
        assert_eq!(
            LifecycleEvent::now("a", Action::Deleted).uid,
            Some(own),
            "restored"
        );
    }
}
