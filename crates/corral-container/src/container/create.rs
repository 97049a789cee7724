//! Creating a container: its init cloned into new namespaces, the handshake that sets it up,
//! and the cleanup of a create that fails half-way.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxNamespaceType};

use super::exec::proc_ns_name;
use super::Container;
use crate::cgroups::{container_cgroup_path, with_default_device_rules, Cgroup, Layout};
use crate::channel::{Channel, Message};
use crate::error::{Error, Result};
use crate::init::{InitConfig, EXEC_FIFO};
use crate::rootfs::RootfsContext;
use crate::seccomp::Program;
use crate::spec::{has_new_namespace, Bundle, NamespacePlan};
use crate::state::{
    check_id, container_dir, process_start_time, rfc3339_now, Creator, Leftover, Record,
    StateDirLock, Status,
};
use crate::syscall::LinuxSyscall;

/// How to create a container.
#[derive(Debug)]
pub struct CreateOptions {
    /// The state root (`/run/corral` by default).
    pub root: PathBuf,
    pub id: String,
    /// The bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Where the terminal's master goes when `process.terminal` is true (connected socket).
    pub console: Option<UnixStream>,
    /// Descriptors 3..3+N of the caller that the container inherits (systemd socket activation).
    pub preserve_fds: u32,
    /// A directory of the runtime's own where compiled seccomp programs are kept by their
    /// profile's content, so that containers sharing a profile compile it once; `None`
    /// compiles it for every container.
    pub seccomp_cache: Option<PathBuf>,
}

impl Container {
    /// Creates a container: namespaces, cgroup, root filesystem, everything but the user's
    /// program, which waits for [`Container::start`]. On failure nothing is left behind.
    ///
    /// The caller must be single-threaded: the init is a raw clone of it (namespaces in the first
    /// clone, as crun does), and locks held by other threads would never be released there.
    pub fn create(options: CreateOptions) -> Result<Container> {
        check_id(&options.id)?;
        let threads = count_threads();
        if threads > 1 {
            return Err(Error::Threaded(threads));
        }
        let bundle = Bundle::load(&options.bundle)?;
        let spec = &bundle.spec;
        let wants_terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        if wants_terminal && options.console.is_none() {
            return Err(Error::InvalidSpec(
                "process.terminal is true but no console socket was given: pass --console-socket"
                    .into(),
            ));
        }
        let plan = NamespacePlan::from_spec(spec);
        if plan.new_time {
            return Err(Error::InvalidSpec(
                "time namespaces are not supported by corral yet".into(),
            ));
        }

        if !crate::sealed_exe::is_sealed() {
            return Err(Error::UnsealedExe);
        }

        // Held until we return: a create killed at any point releases it.
        let Made {
            _lock,
            dir,
            mut cleanup,
            linux,
            delegated,
            cgroup,
            mut record,
            ..
        } = Made::claim(&options.root, &options.id, &bundle, false, || {
            fail::fail_point!("engine.create-recorded");
            Ok(())
        })?;
        fail::fail_point!("engine.create-cgroup-made");

        let fifo = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::sys(format!("create {}", fifo.display()), e))?;
        let exec_fifo = nix::fcntl::open(&fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| Error::sys(format!("open {}", fifo.display()), e))?;
        if let Some((uid, gid)) = container_root_on_host(&linux) {
            nix::unistd::chown(&fifo, Some(uid.into()), Some(gid.into())).map_err(|e| {
                Error::sys(
                    format!("hand {} to the container's root", fifo.display()),
                    e,
                )
            })?;
        }
        record.seccomp_cache = options.seccomp_cache;
        let seccomp = linux
            .seccomp()
            .as_ref()
            .map(|profile| Program::for_profile(profile, record.seccomp_cache.as_deref()))
            .transpose()?;
        let (runtime_end, init_end) = Channel::pair()?;
        let rootfs = RootfsContext {
            bundle: bundle.path.clone(),
            in_user_namespace: has_new_namespace(spec, LinuxNamespaceType::User)
                || plan
                    .join
                    .iter()
                    .any(|(kind, _)| *kind == LinuxNamespaceType::User),
            in_cgroup_namespace: plan.creates(CloneFlags::CLONE_NEWCGROUP),
            cgroup_mounts: cgroup.container_mounts(delegated),
        };

        let init_config = InitConfig {
            id: &options.id,
            bundle: &bundle,
            plan: &plan,
            channel: init_end,
            exec_fifo,
            console: options.console,
            rootfs,
            preserve_fds: options.preserve_fds,
            seccomp,
        };
        // The init is a clone of this process: until it execs the user's program, other
        // processes must not reach its memory or /proc/PID/exe (CVE-2019-5736). execve resets
        // this for the program.
        nix::sys::prctl::set_dumpable(false)
            .map_err(|e| Error::sys("make the runtime non-dumpable", e))?;
        let pid = clone_init(&plan, init_config)?;
        cleanup.child = Some(pid);
        fail::fail_point!("engine.create-cloned");
        record.pid = pid.as_raw();
        record.pid_start_time = process_start_time(pid.as_raw())
            .ok_or_else(|| Error::Setup("the container's init exited during setup".into()))?;
        // Not recorded yet: until the init is in its cgroup it dies with us (parent-death
        // signal, or end-of-file on the channel), and from then on the cgroup finds it.
        run_init_handshake(&bundle, &*cgroup, pid, &runtime_end, &record)?;
        fail::fail_point!("engine.create-ready");
        record.creator = None;
        record.save(&options.root)?;
        cleanup.disarm();
        Ok(Container {
            root: options.root,
            record,
        })
    }

    /// Removes what an interrupted create made: its init and any process in its cgroup, and
    /// the cgroup. The state directory is left to the caller.
    pub(super) fn clean_up_interrupted(&self) -> Result<()> {
        self.kill_all_and_wait()?;
        self.cgroup().destroy()
    }
}

/// What `create` and `restore` make before the container's first process: its claimed state
/// directory (a leftover of an interrupted run under the same id cleaned up first), its record,
/// saved before anything else exists so that a run killed from there on leaves a record of what
/// to undo, and its cgroup with the spec's limits.
pub(super) struct Made {
    /// Held until the caller returns.
    pub(super) _lock: StateDirLock,
    pub(super) dir: PathBuf,
    pub(super) cleanup: Cleanup,
    pub(super) linux: Linux,
    pub(super) delegated: bool,
    /// The cgroup's path as the spec names it (relative to each hierarchy's root).
    pub(super) cgroup_path: PathBuf,
    pub(super) cgroup: Box<dyn Cgroup>,
    pub(super) record: Record,
}

impl Made {
    /// Claims `id` under `root` for `bundle` and records it (`started` as a restored container
    /// is); `recorded` runs between the record and the cgroup (a failpoint's place).
    pub(super) fn claim(
        root: &Path,
        id: &str,
        bundle: &Bundle,
        started: bool,
        recorded: impl FnOnce() -> Result<()>,
    ) -> Result<Made> {
        let spec = &bundle.spec;
        std::fs::create_dir_all(root).map_err(|e| Error::io("create state root", root, e))?;
        let (lock, leftover) = crate::state::claim(root, id)?;
        let dir = container_dir(root, id);
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            cgroup: None,
            child: None,
        };
        match leftover {
            Leftover::None => {}
            Leftover::Record(record) => {
                Container {
                    root: root.to_path_buf(),
                    record: *record,
                }
                .clean_up_interrupted()?;
                crate::state::empty_dir(&dir)?;
            }
            Leftover::Unrecorded => crate::state::empty_dir(&dir)?,
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let delegated = crate::spec::delegates_systemd_cgroup(spec)?;
        let layout = match delegated {
            true => Layout::detect()?.with_systemd_hierarchy()?,
            false => Layout::detect()?,
        };
        let cgroup_path = container_cgroup_path(linux.cgroups_path().as_deref(), id)?;
        let cgroup = layout.open(&cgroup_path);
        let record = Record {
            id: id.to_owned(),
            bundle: bundle.path.clone(),
            rootfs: bundle.rootfs.clone(),
            pid: 0,
            pid_start_time: 0,
            created: rfc3339_now(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            cgroup_path: cgroup.path().to_path_buf(),
            cgroup_layout: layout.clone(),
            started,
            exit_status: None,
            hooks: spec.hooks().clone(),
            owner: String::new(),
            creator: Some(Creator::current()?),
            seccomp_cache: None,
        };
        record.save(root)?;
        recorded()?;

        cgroup.create()?;
        cleanup.cgroup = Some(layout.open(&cgroup_path));
        let resources = linux.resources().clone().unwrap_or_default();
        let devices = linux.devices().clone().unwrap_or_default();
        cgroup.apply(&with_default_device_rules(&resources, &devices))?;
        if let (true, Some(owner)) = (delegated, container_root_on_host(&linux)) {
            cgroup.delegate(owner)?;
        }
        Ok(Made {
            _lock: lock,
            dir,
            cleanup,
            linux,
            delegated,
            cgroup_path,
            cgroup,
            record,
        })
    }
}

/// Undoes a failed create: kills the init, removes the cgroup and the state directory.
pub(super) struct Cleanup {
    pub(super) dir: PathBuf,
    pub(super) cgroup: Option<Box<dyn Cgroup>>,
    pub(super) child: Option<Pid>,
}

impl Cleanup {
    pub(super) fn disarm(&mut self) {
        self.cgroup = None;
        self.child = None;
        self.dir = PathBuf::new();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = self.child {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let Some(cgroup) = &self.cgroup {
            if let Err(err) = cgroup.destroy() {
                tracing::warn!("cleaning up after a failed create: {err}");
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The host uid and gid that uid 0 and gid 0 of the container map to, when it has id maps.
pub(super) fn container_root_on_host(linux: &oci_spec::runtime::Linux) -> Option<(u32, u32)> {
    let host_of = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    Some((
        host_of(linux.uid_mappings())?,
        host_of(linux.gid_mappings())?,
    ))
}

fn count_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Starts the init with one clone into all new namespaces (joining first, and leaving after,
/// those the runtime joins for it: see [`NamespacePlan::joined_before_clone`]).
fn clone_init(plan: &NamespacePlan, config: InitConfig<'_>) -> Result<Pid> {
    let mut restore = Vec::new();
    for (kind, path) in plan.joined_before_clone() {
        let flag = crate::spec::clone_flag(kind);
        let own_path = format!("/proc/self/ns/{}", proc_ns_name(kind));
        let own = nix::fcntl::open(
            own_path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("open {own_path}"), e))?;
        crate::init::join_namespace(&LinuxSyscall, path, flag)?;
        restore.push((flag, own));
    }
    // The cgroup namespace is unshared by the init once it is in its cgroup, so that cgroup
    // becomes the namespace's root.
    let namespaces = plan.clone_flags - CloneFlags::CLONE_NEWCGROUP;
    let flags = namespaces.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone without a new stack behaves like fork: the child continues here on a
    // copy of the stack. The caller is single-threaded (checked in create), so no lock is held.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if rc == 0 {
        crate::init::run(config);
    }
    for (flag, own) in restore {
        nix::sched::setns(own.as_fd(), flag)
            .map_err(|e| Error::sys(format!("return to the runtime's {flag:?} namespace"), e))?;
    }
    if rc < 0 {
        return Err(Error::sys("clone the container's init", nix::Error::last()));
    }
    Ok(Pid::from_raw(rc as i32))
}

/// The runtime's half of create after the clone: id maps, cgroup, oom score, hooks.
fn run_init_handshake(
    bundle: &Bundle,
    cgroup: &dyn Cgroup,
    pid: Pid,
    channel: &Channel,
    record: &Record,
) -> Result<()> {
    let spec = &bundle.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    if has_new_namespace(spec, LinuxNamespaceType::User) {
        write_id_map(
            pid,
            "gid_map",
            linux.gid_mappings().as_deref().unwrap_or_default(),
        )?;
        write_id_map(
            pid,
            "uid_map",
            linux.uid_mappings().as_deref().unwrap_or_default(),
        )?;
    }
    cgroup.add_process(pid.as_raw())?;
    if let Some(score) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, score.to_string()).map_err(|e| Error::io("write", path, e))?;
    }
    channel.send(&Message::Go)?;
    loop {
        match channel.recv()? {
            Some(Message::Ready) => break,
            Some(Message::RunHooks) => {
                // runtime-tools expects "created" here, as runc reports it.
                let state = record.oci_state(Status::Created);
                let hooks = spec.hooks().clone().unwrap_or_default();
                let result = crate::hooks::run_hooks(
                    "prestart",
                    hooks.prestart().as_deref().unwrap_or_default(),
                    &state,
                )
                .and_then(|_| {
                    crate::hooks::run_hooks(
                        "createRuntime",
                        hooks.create_runtime().as_deref().unwrap_or_default(),
                        &state,
                    )
                });
                if let Err(err) = result {
                    let _ = channel.send(&Message::Failed(corral_host::error_chain(&err)));
                    return Err(err);
                }
                channel.send(&Message::Go)?;
            }
            Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
            Some(other) => return Err(Error::Setup(format!("container init sent {other:?}"))),
            None => {
                return Err(Error::Setup(
                    "the container's init exited during setup".into(),
                ))
            }
        }
    }
    Ok(())
}

fn write_id_map(
    pid: Pid,
    file: &str,
    mappings: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<()> {
    let text: String = mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text).map_err(|e| Error::io("write", path, e))
}
