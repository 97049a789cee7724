//! The manager's reconcile paths with a fake driver that records what it is asked and a store in
//! a temporary directory: no supervisor ever runs. A "live supervisor" is a `sleep` this test
//! starts and ends.

use std::process::Command;
use std::sync::{Arc, Mutex};

use corral_vmm::config::MemorySize;

use super::*;
use crate::definition::new_uuid;

/// A driver that runs nothing and records each call as `"call NAME"`.
#[derive(Clone, Default)]
struct FakeDriver {
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeDriver {
    fn record(&self, call: &str, name: &str) {
        self.calls.lock().unwrap().push(format!("{call} {name}"));
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Driver for FakeDriver {
    fn supervisor_command(
        &self,
        definition: &Definition,
        _paths: &InstancePaths,
    ) -> Result<Command, CoreError> {
        self.record("supervisor_command", &definition.name);
        Err(CoreError::Unsupported(
            "the fake driver runs nothing".into(),
        ))
    }

    fn settle_definition(
        &self,
        definition: &mut Definition,
        _paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        self.record("settle_definition", &definition.name);
        Ok(())
    }

    fn check_resources(
        &self,
        definition: &Definition,
        _paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        self.record("check_resources", &definition.name);
        Ok(())
    }

    fn clean_up_lost_run(&self, name: &str, _paths: &InstancePaths) {
        self.record("clean_up_lost_run", name);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    manager: Manager,
    vm: FakeDriver,
    container: FakeDriver,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    let vm = FakeDriver::default();
    let container = FakeDriver::default();
    let manager = Manager::new(store, Box::new(vm.clone()), Box::new(container.clone()))
        .with_lock_timeout(Duration::from_millis(100));
    Fixture {
        _dir: dir,
        manager,
        vm,
        container,
    }
}

impl Fixture {
    /// Creates container `name` with 2 CPUs and 64 MiB.
    fn create(&self, name: &str) {
        let mut definition = Definition::new(name, Kind::Container, new_uuid().unwrap());
        definition.cpus = 2;
        definition.memory = MemorySize(64 << 20);
        self.manager.create(&definition, |_| Ok(())).unwrap();
    }

    /// Records that `name` runs under the supervisor `pid` (started at `start_ticks`).
    fn record_run(&self, name: &str, pid: u32, start_ticks: Option<u64>) {
        let mut state = State::stopped();
        state.status = Status::Running;
        state.pid = Some(pid);
        state.pid_start_ticks = start_ticks;
        state.started_at = Some(now_secs() - 5);
        self.manager.store().save_state(name, &state).unwrap();
    }

    /// Writes the exit record a supervisor of `name` leaves.
    fn write_exit(&self, name: &str, record: &ExitRecord) {
        let paths = self.manager.paths(name).unwrap();
        std::fs::create_dir_all(paths.runtime_dir()).unwrap();
        record.write(&paths.exit_record()).unwrap();
    }

    fn cleanups(&self, name: &str) -> usize {
        let call = format!("clean_up_lost_run {name}");
        self.container
            .calls()
            .iter()
            .filter(|c| **c == call)
            .count()
    }
}

/// The pid and start time of a process that has ended (and been reaped).
fn dead_pid() -> (u32, Option<u64>) {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let ticks = process_start_ticks(pid);
    child.wait().unwrap();
    (pid, ticks)
}

/// A `sleep` standing in for a live supervisor, ended when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Self {
        Self(Command::new("sleep").arg("60").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn start_ticks(&self) -> Option<u64> {
        process_start_ticks(self.pid())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

#[test]
fn an_instance_never_started_is_stopped_and_nothing_is_cleaned_up() {
    let f = fixture();
    f.create("web");
    let state = f.manager.state("web").unwrap();
    assert_eq!(state, State::stopped());
    assert_eq!(f.cleanups("web"), 0);
}

#[test]
fn create_asks_the_driver_of_its_kind_to_settle_then_check_it() {
    let f = fixture();
    f.create("web");
    assert_eq!(
        f.container.calls(),
        ["settle_definition web", "check_resources web"]
    );
    assert!(f.vm.calls().is_empty(), "{:?}", f.vm.calls());
}

#[test]
fn a_dead_supervisor_ends_the_run_as_its_exit_record_says() {
    // (reason, code, detail) → the status the user sees.
    let cases = [
        (ExitReason::Poweroff, Some(0), None, Status::Stopped),
        (ExitReason::Reboot, None, None, Status::Stopped),
        (ExitReason::Stopped, Some(143), None, Status::Stopped),
        (ExitReason::Exited, Some(3), None, Status::Stopped),
        (
            ExitReason::Crashed,
            None,
            Some("triple fault"),
            Status::Crashed,
        ),
        (ExitReason::Failed, None, Some("no kernel"), Status::Crashed),
        (
            ExitReason::RestartLimit,
            Some(1),
            Some("exited with 1"),
            Status::Crashed,
        ),
        (
            ExitReason::Other("melted".into()),
            None,
            None,
            Status::Stopped,
        ),
    ];
    let f = fixture();
    for (index, (reason, code, detail, status)) in cases.into_iter().enumerate() {
        let name = format!("i{index}");
        f.create(&name);
        let (pid, ticks) = dead_pid();
        f.record_run(&name, pid, ticks);
        let record = ExitRecord {
            reason: reason.clone(),
            code,
            detail: detail.map(String::from),
        };
        f.write_exit(&name, &record);

        let state = f.manager.state(&name).unwrap();
        assert_eq!(state.status, status, "{reason}");
        assert_eq!((state.pid, state.started_at), (None, None), "{reason}");
        let exit = state.last_exit.clone().unwrap();
        assert_eq!(
            (exit.reason, exit.code, exit.detail),
            (record.reason, record.code, record.detail)
        );
        assert_eq!(f.manager.store().state(&name).unwrap(), state, "recorded");
        assert_eq!(f.cleanups(&name), 1, "{reason}");
    }
}

#[test]
fn a_dead_supervisor_without_an_exit_record_is_lost_and_cleaned_up_once() {
    let f = fixture();
    f.create("web");
    let (pid, ticks) = dead_pid();
    f.record_run("web", pid, ticks);
    let state = f.manager.state("web").unwrap();
    assert_eq!(state.status, Status::Crashed);
    let exit = state.last_exit.unwrap();
    assert_eq!(exit.reason, ExitReason::SupervisorLost);
    assert_eq!(
        exit.detail.as_deref(),
        Some(format!("the supervisor (pid {pid}) died without recording an exit").as_str())
    );
    assert_eq!(f.cleanups("web"), 1);
    // Once recorded, the run is over: asking again cleans up nothing more.
    assert_eq!(f.manager.state("web").unwrap().status, Status::Crashed);
    assert_eq!(f.cleanups("web"), 1);
}

#[test]
fn a_pid_reused_by_another_process_is_not_the_supervisor() {
    let f = fixture();
    f.create("web");
    let other = Sleeper::start();
    let ticks = other.start_ticks().unwrap();
    f.record_run("web", other.pid(), Some(ticks + 1));
    let state = f.manager.state("web").unwrap();
    assert_eq!(state.status, Status::Crashed);
    assert_eq!(state.last_exit.unwrap().reason, ExitReason::SupervisorLost);
    assert_eq!(f.cleanups("web"), 1);
}

#[test]
fn a_live_supervisor_that_does_not_answer_stays_running() {
    let f = fixture();
    f.create("web");
    let supervisor = Sleeper::start();
    f.record_run("web", supervisor.pid(), supervisor.start_ticks());
    let state = f.manager.state("web").unwrap();
    assert_eq!(state.status, Status::Running);
    assert_eq!(state.pid, Some(supervisor.pid()));
    assert!(state.uptime_secs().is_some_and(|secs| secs >= 5));
    assert_eq!(f.cleanups("web"), 0);
}

#[test]
fn a_start_interrupted_before_its_supervisor_was_recorded_failed() {
    let f = fixture();
    f.create("web");
    let mut state = State::stopped();
    state.status = Status::Starting;
    f.manager.store().save_state("web", &state).unwrap();
    let state = f.manager.state("web").unwrap();
    assert_eq!(state.status, Status::Stopped);
    let exit = state.last_exit.unwrap();
    assert_eq!(exit.reason, ExitReason::Failed);
    assert_eq!(exit.detail.as_deref(), Some("the start was interrupted"));
    assert_eq!(f.cleanups("web"), 1);
}

#[test]
fn a_start_whose_supervisor_cannot_be_made_records_the_failure() {
    let f = fixture();
    f.create("web");
    let err = f.manager.start("web").unwrap_err();
    assert_eq!(err.to_string(), "the fake driver runs nothing");
    let state = f.manager.state("web").unwrap();
    assert_eq!(state.status, Status::Stopped);
    let exit = state.last_exit.unwrap();
    assert_eq!(exit.reason, ExitReason::Failed);
    assert_eq!(exit.detail.as_deref(), Some("the fake driver runs nothing"));
    assert_eq!(f.cleanups("web"), 1, "what the driver prepared is undone");
}

#[test]
fn list_summarises_every_instance_reconciled_and_sorted_by_name() {
    let f = fixture();
    for name in ["c-lost", "a-stopped", "b-running"] {
        f.create(name);
    }
    let supervisor = Sleeper::start();
    f.record_run("b-running", supervisor.pid(), supervisor.start_ticks());
    let (pid, ticks) = dead_pid();
    f.record_run("c-lost", pid, ticks);

    let summaries = f.manager.list().unwrap();
    let seen: Vec<(&str, Status, Option<u32>, bool)> = summaries
        .iter()
        .map(|s| (s.name.as_str(), s.status, s.pid, s.uptime_secs.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a-stopped", Status::Stopped, None, false),
            ("b-running", Status::Running, Some(supervisor.pid()), true),
            ("c-lost", Status::Crashed, None, false),
        ]
    );
    for summary in &summaries {
        assert_eq!(summary.kind, Kind::Container);
        assert_eq!((summary.cpus, summary.memory_bytes), (2, 64 << 20));
        assert!(summary.ipv4.is_empty());
    }
    assert_eq!(
        summaries[2].last_exit.as_ref().map(|e| &e.reason),
        Some(&ExitReason::SupervisorLost)
    );
    assert_eq!(f.cleanups("c-lost"), 1, "listing reconciles");
}

#[test]
fn deleting_a_stopped_instance_removes_its_directory() {
    let f = fixture();
    f.create("web");
    f.create("db");
    let dir = f.manager.store().instance_dir("web");
    assert!(dir.is_dir());
    f.manager.delete("web", false).unwrap();
    assert!(!dir.exists());
    assert_eq!(f.manager.store().names().unwrap(), ["db"]);
    assert_eq!(f.cleanups("web"), 1, "what an earlier run left goes too");
}

#[test]
fn deleting_a_running_instance_without_force_is_refused() {
    let f = fixture();
    f.create("web");
    let supervisor = Sleeper::start();
    f.record_run("web", supervisor.pid(), supervisor.start_ticks());
    let err = f.manager.delete("web", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance web is running; stop it first, or delete it with --force"
    );
    assert!(f.manager.store().instance_dir("web").is_dir());
    assert_eq!(f.manager.state("web").unwrap().status, Status::Running);
    assert_eq!(f.cleanups("web"), 0);
}

#[test]
fn stopping_or_killing_a_stopped_instance_says_it_is_not_running() {
    let f = fixture();
    f.create("web");
    let expected = "instance web is not running; start it with `corral start web`";
    let stop = f.manager.stop("web", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(stop, CoreError::NotRunning(_)), "{stop:?}");
    assert_eq!(stop.to_string(), expected);
    let kill = f.manager.kill("web").unwrap_err();
    assert_eq!(kill.to_string(), expected);
    assert_eq!(f.manager.state("web").unwrap(), State::stopped());
}

#[test]
fn a_duplicate_name_is_refused_before_anything_is_populated() {
    let f = fixture();
    f.create("web");
    let definition = Definition::new("web", Kind::Container, new_uuid().unwrap());
    let mut populated = false;
    let err = f
        .manager
        .create(&definition, |_| {
            populated = true;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "instance web already exists; choose another name or delete it first"
    );
    assert!(!populated);
    assert_eq!(f.manager.store().names().unwrap(), ["web"]);
}

#[test]
fn a_held_lock_makes_commands_busy_and_state_show_the_record() {
    let f = fixture();
    f.create("web");
    let (pid, ticks) = dead_pid();
    f.record_run("web", pid, ticks);
    let held = f.manager.lock("web").unwrap();

    let started = Instant::now();
    let err = f.manager.start("web").unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(100));
    let text = err.to_string();
    assert!(
        text.starts_with("instance web is busy: ")
            && text.contains(&format!("(pid {})", std::process::id()))
            && text.ends_with("wait for it to finish, then retry"),
        "{text}"
    );
    // Never waits: the recorded state, not reconciled while another command holds the lock.
    assert_eq!(f.manager.state("web").unwrap().status, Status::Running);
    assert_eq!(f.cleanups("web"), 0);

    drop(held);
    assert_eq!(f.manager.state("web").unwrap().status, Status::Crashed);
}

#[test]
fn start_many_tries_each_name_once_and_reports_every_outcome_in_order() {
    let f = fixture();
    f.create("a");
    f.create("b");
    f.create("busy");
    let sleeper = Sleeper::start();
    f.record_run("busy", sleeper.pid(), sleeper.start_ticks());
    let names: Vec<String> = ["a", "ghost", "busy", "b", "a"]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let outcomes = f.manager.start_many(&names);
    let reported = described(&outcomes, |state| format!("{:?}", state.status));
    assert_eq!(
        reported,
        [
            ("a", "the fake driver runs nothing".to_string()),
            (
                "ghost",
                "instance ghost does not exist; `corral list --all` shows the defined instances"
                    .to_string()
            ),
            ("busy", "instance busy is already running".to_string()),
            ("b", "the fake driver runs nothing".to_string()),
        ]
    );
    let mut asked: Vec<String> = f
        .container
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("supervisor_command"))
        .collect();
    asked.sort();
    assert_eq!(asked, ["supervisor_command a", "supervisor_command b"]);
    assert_eq!(f.manager.state("busy").unwrap().status, Status::Running);
}

#[test]
fn delete_many_deletes_each_name_once_and_reports_every_outcome_in_order() {
    let f = fixture();
    for name in ["a", "b", "busy"] {
        f.create(name);
    }
    let supervisor = Sleeper::start();
    f.record_run("busy", supervisor.pid(), supervisor.start_ticks());
    let names: Vec<String> = ["a", "ghost", "busy", "b", "a"]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let outcomes = f.manager.delete_many(&names, false);
    let reported = described(&outcomes, |()| "deleted".to_string());
    assert_eq!(
        reported,
        [
            ("a", "deleted".to_string()),
            (
                "ghost",
                "instance ghost does not exist; `corral list --all` shows the defined instances"
                    .to_string()
            ),
            (
                "busy",
                "instance busy is running; stop it first, or delete it with --force".to_string()
            ),
            ("b", "deleted".to_string()),
        ]
    );
    assert_eq!(f.manager.store().names().unwrap(), ["busy"]);
    assert_eq!(f.manager.state("busy").unwrap().status, Status::Running);
}

#[test]
fn stop_many_and_kill_many_try_each_name_once_and_report_every_outcome_in_order() {
    let f = fixture();
    f.create("a");
    f.create("b");
    let names: Vec<String> = ["b", "ghost", "a", "b"]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let expected = [
        (
            "b",
            "instance b is not running; start it with `corral start b`",
        ),
        (
            "ghost",
            "instance ghost does not exist; `corral list --all` shows the defined instances",
        ),
        (
            "a",
            "instance a is not running; start it with `corral start a`",
        ),
    ];
    let expected = expected.map(|(name, message)| (name, message.to_string()));
    let status = |state: &State| format!("{:?}", state.status);
    let stopped = f.manager.stop_many(&names, Duration::from_secs(1));
    assert_eq!(described(&stopped, status), expected);
    assert_eq!(described(&f.manager.kill_many(&names), status), expected);
}

/// Each instance's name and its outcome as text: `ok`'s for a success, the error's message else.
fn described<T>(
    outcomes: &[(String, Result<T, CoreError>)],
    ok: impl Fn(&T) -> String,
) -> Vec<(&str, String)> {
    (outcomes.iter())
        .map(|(name, outcome)| {
            let text = match outcome {
                Ok(value) => ok(value),
                Err(err) => err.to_string(),
            };
            (name.as_str(), text)
        })
        .collect()
}
