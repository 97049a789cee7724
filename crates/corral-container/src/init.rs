//! The container's init: the child of the first clone, already in its new namespaces. It builds
//! the container's view of the world, reports ready, waits for `start` on the exec fifo and then
//! becomes the user's program.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxDevice, Spec};

use crate::channel::{Channel, Message};
use crate::error::{Error, Result};
use crate::rootfs::{self, RootfsContext};
use crate::spec::{Bundle, NamespacePlan};
use crate::syscall::{LinuxSyscall, Syscall};

/// The exec fifo's name in the container's state directory.
pub const EXEC_FIFO: &str = "exec.fifo";

/// What the init needs from the runtime.
pub struct InitConfig<'a> {
    pub id: &'a str,
    pub bundle: &'a Bundle,
    pub plan: &'a NamespacePlan,
    pub channel: Channel,
    /// The exec fifo (O_PATH), reopened for writing through /proc once the root has changed.
    pub exec_fifo: OwnedFd,
    /// Where to send the terminal's master, when the process wants a terminal.
    pub console: Option<UnixStream>,
    pub rootfs: RootfsContext,
    pub preserve_fds: u32,
    /// The spec's seccomp profile, compiled by the runtime (with the host's view of its cache).
    pub seccomp: Option<crate::seccomp::Program>,
}

/// Runs the init; never returns (execs the program or exits with status 1).
pub fn run(config: InitConfig<'_>) -> ! {
    let channel = &config.channel;
    // Everything else the runtime had open goes first: host directories must never be reachable
    // from the container (CVE-2024-21626), and the runtime's end of the channel must close when
    // the runtime dies, so a runtime killed before the go ends the init too.
    let mut keep = vec![channel.raw_fd(), config.exec_fifo.as_raw_fd()];
    keep.extend(config.console.as_ref().map(|c| c.as_raw_fd()));
    if let Err(err) = crate::process::close_fds_except(3 + config.preserve_fds, &keep) {
        exit_with(err);
    }
    let error = match setup(&config) {
        Ok(prepared) => {
            if let Err(err) = channel.send(&Message::Ready) {
                exit_with(err);
            }
            wait_and_exec(&config, prepared.as_ref())
        }
        Err(err) => {
            // The runtime reads this and cleans up; if it is gone there is no one to tell.
            let _ = channel.send(&Message::Failed(corral_host::error_chain(&err)));
            err
        }
    };
    exit_with(error)
}

fn exit_with(error: Error) -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "corral init: {}",
        corral_host::error_chain(&error)
    );
    // SAFETY: _exit ends the process without running the parent's atexit handlers or flushing
    // buffers copied from it, which belong to the runtime process.
    unsafe { libc::_exit(1) }
}

fn spec<'a>(config: &InitConfig<'a>) -> &'a Spec {
    &config.bundle.spec
}

/// Builds the container; returns what exec needs, or `None` when the spec has no process (the
/// spec allows creating such a container; `start` then fails).
fn setup(config: &InitConfig<'_>) -> Result<Option<crate::process::Prepared>> {
    let sys = LinuxSyscall;
    let spec = spec(config);
    let linux = spec.linux().clone().unwrap_or_default();
    let process = spec.process().as_ref();
    // Die with the runtime while it still waits for us (set again whenever our ids change,
    // which clears it). A runtime already gone shows as end-of-file on the channel below.
    die_with_runtime(&sys)?;

    match config.channel.recv()? {
        Some(Message::Go) => {}
        other => {
            return Err(Error::Setup(format!(
                "runtime sent {other:?} instead of go"
            )))
        }
    }
    let rootfs_path = &config.bundle.rootfs;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let mut host_files = None;
    if config.plan.creates(CloneFlags::CLONE_NEWUSER) {
        // Still the runtime's user on the host: open what the setup needs there now. As root of
        // the new namespace (a host uid of the container's range) the init may not traverse the
        // private directories that hold the rootfs and volumes; it reaches them only through
        // these handles, and nothing else of the host's.
        host_files = Some(rootfs::HostFiles::open_ahead(
            &sys,
            rootfs_path,
            mounts,
            &config.rootfs.bundle,
        )?);
        become_root_of_user_namespace(&sys)?;
    }
    enter_namespaces(&sys, config.plan)?;

    let joins_mount_namespace = config
        .plan
        .join
        .iter()
        .any(|(kind, _)| *kind == oci_spec::runtime::LinuxNamespaceType::Mount);
    if !config.plan.creates(CloneFlags::CLONE_NEWNS) && !joins_mount_namespace {
        return Err(Error::InvalidSpec(
            "the container needs a mount namespace: add {\"type\": \"mount\"} to linux.namespaces"
                .into(),
        ));
    }
    let propagation = linux.rootfs_propagation().as_deref();
    let rootfs_flags = crate::spec::rootfs_flags(spec)?;
    // Device nodes and mount points get exactly the modes asked for; the process's own umask is
    // set just before exec.
    nix::sys::stat::umask(Mode::empty());
    rootfs::isolate_mount_tree(&sys, propagation)?;
    let rootfs = rootfs::bind_rootfs(
        &sys,
        host_files.unwrap_or_default(),
        rootfs_path,
        rootfs_flags,
    )?;
    rootfs::mount_all(&sys, &rootfs, mounts, &config.rootfs)?;
    let dev_is_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && m.options()
                .iter()
                .flatten()
                .any(|o| o == "bind" || o == "rbind")
    });
    if !dev_is_bound {
        let mut devices = rootfs::default_devices();
        let extra: &[LinuxDevice] = linux.devices().as_deref().unwrap_or_default();
        devices.extend(extra.iter().cloned());
        rootfs::create_devices(&sys, &rootfs, &devices, config.rootfs.in_user_namespace)?;
        rootfs::create_dev_symlinks(&sys, &rootfs)?;
    }
    let hooks = spec.hooks().clone().unwrap_or_default();
    let has_runtime_hooks = hooks.prestart().as_ref().is_some_and(|h| !h.is_empty())
        || hooks
            .create_runtime()
            .as_ref()
            .is_some_and(|h| !h.is_empty());
    if has_runtime_hooks {
        config.channel.send(&Message::RunHooks)?;
        match config.channel.recv()? {
            Some(Message::Go) => {}
            Some(Message::Failed(reason)) => return Err(Error::Init(reason)),
            other => return Err(Error::Setup(format!("runtime sent {other:?} after hooks"))),
        }
    }
    if let Some(create_container) = hooks.create_container() {
        let state = hook_state(config);
        crate::hooks::run_hooks("createContainer", create_container, &state)?;
    }
    rootfs::pivot(&sys, &rootfs)?;
    drop(rootfs);
    rootfs::finish_root_propagation(&sys, propagation)?;

    if let Some(console) = &config.console {
        let size = process.and_then(|p| p.console_size()).map(|b| {
            (
                u16::try_from(b.height()).unwrap_or(u16::MAX),
                u16::try_from(b.width()).unwrap_or(u16::MAX),
            )
        });
        let (master, slave, name) = crate::console::open_pty(size)?;
        let console_path = Path::new("/dev/console");
        if sys.file_kind(console_path).is_none() {
            sys.touch(console_path)?;
        }
        sys.mount(
            Some(Path::new(&name)),
            console_path,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
        crate::console::become_terminal(&slave)?;
        crate::console::send_fd(console.as_raw_fd(), master.as_raw_fd(), &name)?;
    }
    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sys.sethostname(hostname)?;
    }
    if let Some(domainname) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        sys.setdomainname(domainname)?;
    }
    if let Some(sysctls) = linux.sysctl() {
        rootfs::apply_sysctls(&sys, sysctls)?;
    }
    rootfs::readonly_paths(&sys, linux.readonly_paths().as_deref().unwrap_or_default())?;
    rootfs::mask_paths(&sys, linux.masked_paths().as_deref().unwrap_or_default())?;
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        // With the root's other flags: a remount without them would drop its nodev.
        let kept = sys.mount_flags_of(&sys.open_path(Path::new("/"))?)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept;
        sys.mount(None, Path::new("/"), None, flags, None)?;
    }
    let keep = [config.channel.raw_fd(), config.exec_fifo.as_raw_fd()];
    let first_fd = 3 + config.preserve_fds;
    let prepared = process
        .map(|p| crate::process::prepare(p, config.seccomp.as_ref(), first_fd, &keep))
        .transpose()?;
    crate::process::close_fds_on_exec(first_fd);
    // The runtime process exits once the container is created; the container lives on.
    sys.set_pdeathsig(None)
        .map_err(|e| Error::sys("stop dying with the runtime", e))?;
    Ok(prepared)
}

/// Asks the kernel to SIGKILL us when the runtime (our parent) dies.
fn die_with_runtime(sys: &dyn Syscall) -> Result<()> {
    sys.set_pdeathsig(Some(Signal::SIGKILL))
        .map_err(|e| Error::sys("ask to die with the runtime", e))
}

/// Becomes root of the new user namespace, whose id maps the runtime has written; the id change
/// clears the parent-death signal, so it is asked for again.
fn become_root_of_user_namespace(sys: &dyn Syscall) -> Result<()> {
    // The group first, the usual order: a uid change can cost the right to change the gid.
    sys.setresgid(0)
        .map_err(|e| Error::sys("become gid 0 in the user namespace", e))?;
    sys.setresuid(0)
        .map_err(|e| Error::sys("become uid 0 in the user namespace", e))?;
    die_with_runtime(sys)
}

/// Creates the cgroup namespace (now that the runtime has put us in our cgroup, which becomes
/// its root), joins the namespaces given by path that the runtime did not join for us, in the
/// plan's order, and starts a session.
fn enter_namespaces(sys: &dyn Syscall, plan: &NamespacePlan) -> Result<()> {
    if plan.creates(CloneFlags::CLONE_NEWCGROUP) {
        sys.unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| Error::sys("create the cgroup namespace", e))?;
    }
    for (kind, path) in &plan.join {
        if crate::spec::joined_by_runtime(*kind) {
            continue; // joined by the runtime before the clone
        }
        join_namespace(sys, path, crate::spec::clone_flag(*kind))?;
    }
    sys.setsid().map_err(|e| Error::sys("start a session", e))
}

/// Joins the namespace at `path`, which must be of kind `kind`.
pub fn join_namespace(sys: &dyn Syscall, path: &Path, kind: CloneFlags) -> Result<()> {
    let ns = sys
        .open_namespace(path)
        .map_err(|e| Error::sys(format!("open namespace {}", path.display()), e))?;
    sys.setns(&ns, kind)
        .map_err(|e| Error::sys(format!("join namespace {}", path.display()), e))
}

fn hook_state(config: &InitConfig<'_>) -> crate::state::OciState {
    crate::state::OciState {
        oci_version: crate::state::OCI_VERSION.to_owned(),
        id: config.id.to_owned(),
        status: crate::state::Status::Created,
        pid: std::process::id() as i32,
        bundle: config.bundle.path.clone(),
        rootfs: config.bundle.rootfs.clone(),
        created: String::new(),
        owner: String::new(),
        annotations: config.bundle.spec.annotations().clone().unwrap_or_default(),
    }
}

/// Blocks until `start` opens the exec fifo, tells it we are going, runs startContainer hooks
/// and execs. Failures from here on are written into the fifo for `start` to report.
fn wait_and_exec(config: &InitConfig<'_>, prepared: Option<&crate::process::Prepared>) -> Error {
    // Reopening our own O_PATH fd checks only the fifo's permissions (it belongs to the
    // container's root), not the root-only state directory's. The state directory itself is
    // never open in the container: a directory of the host would be a way out of it.
    let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC;
    let by_fd = format!("/proc/self/fd/{}", config.exec_fifo.as_raw_fd());
    let fifo = match nix::fcntl::open(by_fd.as_str(), flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            return Error::sys(
                "open the exec fifo through /proc/self/fd (the container needs /proc mounted)",
                e,
            )
        }
    };
    let mut fifo = fifo;
    if let Err(e) = fifo.write_all(b"0") {
        return Error::io("write", EXEC_FIFO, e);
    }
    let spec = spec(config);
    let result = (|| {
        if let Some(start_container) = spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_ref())
        {
            let state = hook_state(config);
            crate::hooks::run_hooks("startContainer", start_container, &state)?;
        }
        match (spec.process(), prepared) {
            (Some(process), Some(prepared)) => Err(crate::process::exec(process, prepared)),
            _ => Err(Error::InvalidSpec(
                "config.json has no process, so there is nothing to start".into(),
            )),
        }
    })();
    let error = match result {
        Err(err) => err,
        Ok(()) => Error::Setup("exec returned".into()),
    };
    let _ = fifo.write_all(corral_host::error_chain(&error).as_bytes());
    error
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use oci_spec::runtime::LinuxNamespaceType;

    use super::*;
    use crate::syscall::{Call, RecordingSyscall};

    fn plan(creates: CloneFlags, join: &[(LinuxNamespaceType, &str)]) -> NamespacePlan {
        NamespacePlan {
            clone_flags: creates,
            new_time: false,
            join: join
                .iter()
                .map(|(kind, path)| (*kind, PathBuf::from(path)))
                .collect(),
        }
    }

    #[test]
    fn becoming_root_of_a_new_user_namespace_sets_the_group_first_then_rearms_the_death_signal() {
        let sys = RecordingSyscall::new();
        become_root_of_user_namespace(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Setresgid(0),
                Call::Setresuid(0),
                Call::Pdeathsig(Some(Signal::SIGKILL)),
            ]
        );
    }

    #[test]
    fn a_refused_uid_change_names_the_step_and_stops_there() {
        let sys = RecordingSyscall::new().with_failing_call(Call::Setresuid(0));
        let err = become_root_of_user_namespace(&sys).unwrap_err();
        assert!(
            matches!(&err, Error::Sys { what, source: nix::Error::EPERM } if what == "become uid 0 in the user namespace"),
            "{err:?}"
        );
        assert_eq!(sys.calls(), [Call::Setresgid(0)]);
    }

    #[test]
    fn the_cgroup_namespace_is_unshared_only_when_the_plan_creates_it() {
        let sys = RecordingSyscall::new();
        let creates = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
        enter_namespaces(&sys, &plan(creates, &[])).unwrap();
        assert_eq!(
            sys.calls(),
            [Call::Unshare(CloneFlags::CLONE_NEWCGROUP), Call::Setsid]
        );

        let sys = RecordingSyscall::new();
        enter_namespaces(&sys, &plan(CloneFlags::CLONE_NEWNS, &[])).unwrap();
        assert_eq!(sys.calls(), [Call::Setsid]);
    }

    #[test]
    fn namespaces_by_path_are_joined_in_order_except_those_the_runtime_joins() {
        let sys = RecordingSyscall::new();
        let join = [
            (LinuxNamespaceType::User, "/proc/7/ns/user"),
            (LinuxNamespaceType::Network, "/run/netns/n"),
            (LinuxNamespaceType::Pid, "/proc/7/ns/pid"),
            (LinuxNamespaceType::Ipc, "/proc/7/ns/ipc"),
        ];
        enter_namespaces(&sys, &plan(CloneFlags::CLONE_NEWCGROUP, &join)).unwrap();
        assert_eq!(
            sys.calls(),
            [
                Call::Unshare(CloneFlags::CLONE_NEWCGROUP),
                Call::OpenNamespace("/proc/7/ns/user".into()),
                Call::Setns("/proc/7/ns/user".into(), CloneFlags::CLONE_NEWUSER),
                Call::OpenNamespace("/proc/7/ns/ipc".into()),
                Call::Setns("/proc/7/ns/ipc".into(), CloneFlags::CLONE_NEWIPC),
                Call::Setsid,
            ]
        );
    }

    #[test]
    fn a_refused_join_names_the_namespace_and_starts_no_session() {
        let path = "/proc/7/ns/uts";
        let sys = RecordingSyscall::new()
            .with_failing_call(Call::Setns(path.into(), CloneFlags::CLONE_NEWUTS));
        let err = enter_namespaces(
            &sys,
            &plan(CloneFlags::empty(), &[(LinuxNamespaceType::Uts, path)]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Sys { what, .. } if what == "join namespace /proc/7/ns/uts"),
            "{err:?}"
        );
        assert!(!sys.calls().contains(&Call::Setsid));
    }

    #[test]
    fn an_unopenable_namespace_is_never_joined() {
        let path = "/proc/7/ns/mnt";
        let sys = RecordingSyscall::new().with_failing_call(Call::OpenNamespace(path.into()));
        let err = join_namespace(&sys, Path::new(path), CloneFlags::CLONE_NEWNS).unwrap_err();
        assert!(
            matches!(&err, Error::Sys { what, .. } if what == "open namespace /proc/7/ns/mnt"),
            "{err:?}"
        );
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_refused_session_is_reported_as_such() {
        let sys = RecordingSyscall::new().with_failing_call(Call::Setsid);
        let err = enter_namespaces(&sys, &plan(CloneFlags::empty(), &[])).unwrap_err();
        assert!(
            matches!(&err, Error::Sys { what, .. } if what == "start a session"),
            "{err:?}"
        );
    }
}
