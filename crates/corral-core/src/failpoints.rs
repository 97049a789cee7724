//! Named kill points in corral's multi-step operations, for the crash-consistency harness
//! (`crates/corral/tests/failpoints.rs`), which SIGKILLs a command at each one in turn and checks
//! that nothing is left half-done.
//!
//! The points are tikv's fail-rs `fail_point!`s, which compile to nothing unless this crate's
//! `failpoints` feature is on: the tests of `corral` turn it on through their dev-dependency, a
//! release build never does. `FAILPOINTS="NAME=kill;..."` arms them in a corral process and the
//! supervisors it starts (a jailed VMM gets an empty environment and has none); `kill` is
//! corral's action (SIGKILL of the process at that instant, after noting the hit in the file
//! `CORRAL_FAILPOINTS_LOG` names), and fail-rs's own (`pause`, `sleep(MS)`, `panic`, ...) work
//! too.

/// The environment variable that arms failpoints.
pub const ENV: &str = "FAILPOINTS";
/// The environment variable naming a file where each kill appends `NAME PID`.
pub const HIT_LOG_ENV: &str = "CORRAL_FAILPOINTS_LOG";

/// One failpoint: its name, and what is done (and not yet) when it is reached.
#[derive(Clone, Copy, Debug)]
pub struct Failpoint {
    pub name: &'static str,
    pub state: &'static str,
}

/// Every `fail_point!` in corral's source; the harness checks this list against the source and
/// has a round for each.
#[cfg(feature = "failpoints")]
pub const ALL: &[Failpoint] = &[
    Failpoint {
        name: "create.staging-made",
        state: "create: the hidden staging directory exists, empty",
    },
    Failpoint {
        name: "create.rootfs-copying",
        state: "create: cp or tar is copying the root filesystem into the staging directory",
    },
    Failpoint {
        name: "create.populated",
        state: "create: the staging directory is filled and checked; no definition yet",
    },
    Failpoint {
        name: "create.definition-written",
        state: "create: definition and state are in the staging directory, not renamed into place",
    },
    Failpoint {
        name: "atomic.temp-written",
        state: "an atomic file write: the temp file is complete and synced, not renamed",
    },
    Failpoint {
        name: "start.state-starting",
        state: "start: `starting` is recorded; the supervisor's input is not written yet",
    },
    Failpoint {
        name: "start.userns-shifting",
        state: "start: a setuid file of the rootfs changed owner; its mode is not restored yet",
    },
    Failpoint {
        name: "start.cgroup-created",
        state: "start: the VM's cgroup exists without its limits; no VMM yet",
    },
    Failpoint {
        name: "start.spawned",
        state: "start: the supervisor is spawned, its pid not recorded",
    },
    Failpoint {
        name: "start.pid-recorded",
        state: "start: the supervisor's pid is recorded; it is not serving yet",
    },
    Failpoint {
        name: "monitor.container-created",
        state: "the container monitor: the container is created, not started, nothing served",
    },
    Failpoint {
        name: "engine.create-recorded",
        state: "engine create: the record naming its creator is saved; no cgroup yet",
    },
    Failpoint {
        name: "engine.create-cgroup-made",
        state: "engine create: the cgroup exists with its limits; no init yet",
    },
    Failpoint {
        name: "engine.create-cloned",
        state: "engine create: the init is cloned, waiting for its id maps and cgroup",
    },
    Failpoint {
        name: "engine.create-ready",
        state: "engine create: the init is ready in its cgroup; the record still names the creator",
    },
    Failpoint {
        name: "engine.delete-killed",
        state: "engine delete: the container's processes are killed; cgroup and state remain",
    },
    Failpoint {
        name: "stop.state-stopping",
        state: "stop: `stopping` is recorded; nothing is asked of the supervisor yet",
    },
    Failpoint {
        name: "stop.requested",
        state: "stop: the supervisor was asked to shut down; the end is not awaited",
    },
    Failpoint {
        name: "restart.stopped",
        state: "restart: stopped; not started again",
    },
    Failpoint {
        name: "delete.killed",
        state: "delete --force: the instance is killed, its files are all there",
    },
    Failpoint {
        name: "delete.renamed-aside",
        state: "delete: the instance directory is renamed aside, not removed",
    },
    Failpoint {
        name: "image.temp-written",
        state: "a disk image written (volume, root disk from an image, publish): complete under its temporary name",
    },
    Failpoint {
        name: "image.copying",
        state: "a disk copy (volume import, --full, publish, clone): a chunk is copied into the new image",
    },
    Failpoint {
        name: "clone.base-linked",
        state: "linked clone: the source's disk has its second name in bases/; nothing names the base yet",
    },
    Failpoint {
        name: "clone.source-switched",
        state: "linked clone: the source's definition names its overlay on the base; the disk's old name is not removed, the clone not committed",
    },
    Failpoint {
        name: "snapshot.bases-linked",
        state: "snapshot create: the VM's disks have second names in the snapshot's directory; no overlay, no record yet",
    },
    Failpoint {
        name: "snapshot.vm-saved",
        state: "snapshot create of a running VM: the guest's state is saved and its VMM ended; the disks are not switched, no new VMM",
    },
    Failpoint {
        name: "snapshot.recorded",
        state: "snapshot create: overlays made and the snapshot's record written; the definition still names the old disks",
    },
    Failpoint {
        name: "snapshot.switched",
        state: "snapshot create: the definition names the overlays; the disks' old names are not removed",
    },
    Failpoint {
        name: "snapshot.rootfs-swapped",
        state: "snapshot restore: the container's root filesystem is swapped for the snapshot's copy; the old one is not removed, the definition not restored",
    },
    Failpoint {
        name: "image.grown",
        state: "volume resize: the qcow2 image is grown in memory, its metadata not flushed",
    },
    Failpoint {
        name: "volume.delete-renamed-aside",
        state: "volume delete: a directory volume is renamed aside, not removed",
    },
    Failpoint {
        name: "images.commit-staged",
        state: "image import/publish: the image is staged and synced, not under its fingerprint",
    },
    Failpoint {
        name: "images.committed",
        state: "image import/publish: the image is under its fingerprint; no alias set yet",
    },
    Failpoint {
        name: "images.delete-renamed-aside",
        state: "image delete: the image is renamed aside; its aliases still name it",
    },
    Failpoint {
        name: "images.delete-aliases-saved",
        state: "image delete: its aliases are removed; the tree aside is not",
    },
    Failpoint {
        name: "images.export-temp-written",
        state: "image export: the export is complete under its temporary name, not renamed",
    },
];

/// Failpoints that switch a behaviour off rather than kill (armed with `return`), so a test can
/// prove its check fails when corral misbehaves; the crash harness has no round for them.
#[cfg(feature = "failpoints")]
pub const INJECTED: &[Failpoint] = &[Failpoint {
    name: "inject.cgroup-v2-skip-memory-max",
    state: "cgroup v2: a container's memory.max is not written (its memory limit is not applied)",
}];

/// The kill points compiled into this build (none in a release build).
pub fn compiled() -> &'static [Failpoint] {
    #[cfg(feature = "failpoints")]
    return ALL;
    #[cfg(not(feature = "failpoints"))]
    return &[];
}

/// A `FAILPOINTS` setting that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum FailpointError {
    #[error("{ENV}: {0:?} is not NAME=ACTION")]
    Syntax(String),
    #[error("{ENV}: there is no failpoint {0}; `corral debug failpoints` lists them")]
    Unknown(String),
    #[error("{ENV}: cannot apply {setting:?}: {reason}")]
    Action { setting: String, reason: String },
}

/// Arms the failpoints `FAILPOINTS` names; nothing when it is unset, or in a build without
/// failpoints (where the variable may mean something to another program).
pub fn arm_from_env() -> Result<(), FailpointError> {
    #[cfg(feature = "failpoints")]
    if let Some(settings) = std::env::var_os(ENV) {
        return arm(&settings.to_string_lossy());
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
fn arm(settings: &str) -> Result<(), FailpointError> {
    for setting in settings.split(';').filter(|s| !s.trim().is_empty()) {
        let (name, action) = setting
            .split_once('=')
            .ok_or_else(|| FailpointError::Syntax(setting.to_string()))?;
        let (name, action) = (name.trim(), action.trim());
        let Some(point) = ALL.iter().chain(INJECTED).find(|p| p.name == name) else {
            return Err(FailpointError::Unknown(name.to_string()));
        };
        let applied = if action == "kill" {
            let name = point.name;
            fail::cfg_callback(name, move || kill_here(name))
        } else {
            fail::cfg(name, action)
        };
        applied.map_err(|reason| FailpointError::Action {
            setting: setting.to_string(),
            reason,
        })?;
    }
    Ok(())
}

/// The `kill` action: notes the hit, then SIGKILLs this process (as the OOM killer or a crash
/// would end it: no unwinding, no destructors, no exit handlers).
#[cfg(feature = "failpoints")]
fn kill_here(name: &str) {
    use std::io::Write;
    if let Some(log) = std::env::var_os(HIT_LOG_ENV) {
        let line = format!("{name} {}\n", std::process::id());
        // One short append: whole lines even from several processes. Lost only if unwritable.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut file| file.write_all(line.as_bytes()));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; it arrives before kill(2) returns to a single-threaded process,
    // and at the latest here in any other.
    loop {
        std::thread::park();
    }
}
