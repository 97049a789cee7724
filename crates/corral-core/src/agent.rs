//! The guest agent from the host: where an instance's agent is reached, and the verbs that go
//! through it (file push/pull, exec in a VM, the guest's facts for `info`, shutdown for `stop`,
//! fsfreeze/thaw and sysprep of a live guest).
//!
//! A system container's agent listens on `/run/corral-agent/agent.sock`, a directory the host
//! keeps in the instance's runtime directory and bind-mounts in; a VM's listens on vsock port
//! 1024, reached through the VMM's `run/vsock.sock`. The agent is the guest's: its answers are
//! bounded and timed out by `corral_agent::Client`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_agent::client::{Command, ExitStatus, RemoteFile};
use corral_agent::message::GuestInfo;
use corral_agent::{Client, Transport};
use corral_control::policy::Action;
use corral_host::error_chain;

use crate::definition::{Definition, Kind};
use crate::driver::InstancePaths;
use crate::error::CoreError;
use crate::lifecycle::Manager;
use crate::state::Status;

/// How long a command waits for the agent when the agent is what it is for (push, pull, exec).
pub const AGENT_TIMEOUT: Duration = corral_agent::client::DEFAULT_TIMEOUT;
/// How long `info` waits for an agent that may not be there.
pub const AGENT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `stop` waits for it: a VM whose guest has no vsock driver refuses the connection
/// at once (the VMM listens only once a driver has started the device), so this is paid only
/// by a guest that has a driver, slowly answering under an emulated kernel, or no agent.
pub const AGENT_STOP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The guest CID of every VM: with the VMM's unix-socket scheme the CID is the guest's own
/// address only, never seen by the host's kernel, so VMs need not differ.
pub const VM_GUEST_CID: u64 = 3;

/// The host directory bind-mounted at `/run/corral-agent` in a system container.
pub fn container_agent_dir(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("agent")
}

/// The VMM's host side of a VM's virtio-vsock device.
pub fn vm_vsock_socket(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("vsock.sock")
}

/// How the host reaches the agent of an instance defined by `definition`.
pub fn transport(definition: &Definition, paths: &InstancePaths) -> Result<Transport, CoreError> {
    match definition.kind {
        Kind::Vm => Ok(Transport::Vsock {
            socket: vm_vsock_socket(paths),
            port: corral_agent::DEFAULT_VSOCK_PORT,
        }),
        Kind::Container if has_agent_socket(definition) => {
            let socket = Path::new(corral_agent::CONTAINER_SOCKET)
                .file_name()
                .map(|name| container_agent_dir(paths).join(name))
                .unwrap_or_default();
            Ok(Transport::Unix(socket))
        }
        Kind::Container => Err(CoreError::Unsupported(format!(
            "instance {} is an application container, which has no guest agent; `corral exec` \
             runs commands in it",
            definition.name
        ))),
    }
}

/// Whether a container gets the agent's directory: system containers (`--init`) do.
pub fn has_agent_socket(definition: &Definition) -> bool {
    definition.container.as_ref().is_some_and(|c| c.init)
}

/// What `info` shows of the agent.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum AgentStatus {
    Answering {
        #[serde(flatten)]
        guest: GuestInfo,
    },
    NotAnswering {
        reason: String,
    },
}

impl Manager {
    /// A connection to the guest agent of running instance `name`, within `timeout`.
    pub fn agent(&self, name: &str, timeout: Duration) -> Result<Client, CoreError> {
        let definition = self.store().definition(name)?;
        let transport = transport(&definition, &self.paths(name)?)?;
        match self.state(name)?.status {
            Status::Running => {}
            Status::Paused => return Err(CoreError::Paused(name.to_string())),
            _ => return Err(CoreError::NotRunning(name.to_string())),
        }
        Client::connect(&transport, timeout).map_err(agent_error(name))
    }

    /// The guest's facts when its agent answers quickly; `None` for an instance that cannot
    /// have one (not running, an application container).
    pub fn agent_status(&self, name: &str) -> Option<AgentStatus> {
        let definition = self.store().definition(name).ok()?;
        if definition.kind == Kind::Container && !has_agent_socket(&definition) {
            return None;
        }
        let status = match self
            .agent(name, AGENT_PROBE_TIMEOUT)
            .and_then(|mut client| client.info().map_err(agent_error(name)))
        {
            Ok(guest) => AgentStatus::Answering { guest },
            Err(CoreError::NotRunning(_) | CoreError::Paused(_)) => return None,
            Err(err) => AgentStatus::NotAnswering {
                reason: error_chain(&err),
            },
        };
        Some(status)
    }

    /// Copies `local` to `remote` in the guest, with `mode` (else the local file's permission
    /// bits) and `owner` when given; returns the bytes written.
    pub fn push_file(
        &self,
        name: &str,
        local: &Path,
        remote: &str,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<u64, CoreError> {
        let mut file = File::open(local).map_err(CoreError::io("open", local))?;
        let mode = match mode {
            Some(mode) => mode,
            None => {
                let meta = file.metadata().map_err(CoreError::io("read", local))?;
                meta.permissions().mode() & 0o777
            }
        };
        let mut client = self.agent(name, AGENT_TIMEOUT)?;
        client
            .push(&mut file, remote, mode, owner)
            .map_err(agent_error(name))
    }

    /// Copies `remote` from the guest to `local` (a directory gets the remote file's name),
    /// which appears whole or not at all, with the remote file's permission bits (never set-id
    /// ones: the guest chose them).
    pub fn pull_file(
        &self,
        name: &str,
        remote: &str,
        local: &Path,
    ) -> Result<RemoteFile, CoreError> {
        let local = &pull_destination(remote, local);
        let mut client = self.agent(name, AGENT_TIMEOUT)?;
        let dir = match local.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp = tempfile_in(dir)?;
        let file = client
            .pull(remote, temp.as_file_mut())
            .map_err(agent_error(name))?;
        let permissions = std::fs::Permissions::from_mode(file.mode & 0o777);
        temp.as_file()
            .set_permissions(permissions)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(CoreError::io("write", local))?;
        temp.persist(local)
            .map_err(|e| CoreError::io("write", local)(e.error))?;
        Ok(file)
    }

    /// Runs `command` in a VM through its agent, with this process's stdin, stdout and stderr;
    /// with a terminal, `resizes` carries the local terminal's new sizes.
    pub fn exec_in_guest(
        &self,
        name: &str,
        command: &Command,
        stdin: Option<Box<dyn Read + Send>>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        resizes: Option<std::sync::mpsc::Receiver<corral_agent::message::WindowSize>>,
    ) -> Result<ExitStatus, CoreError> {
        let client = self.agent(name, AGENT_TIMEOUT)?;
        client
            .exec(command, stdin, stdout, stderr, resizes)
            .map_err(agent_error(name))
    }

    /// Freezes the writable filesystems of running instance `name` through its agent (for a
    /// consistent snapshot); returns their mountpoints. The agent thaws them within a minute
    /// if [`Manager::thaw_guest`] does not.
    pub fn freeze_guest(&self, name: &str) -> Result<Vec<String>, CoreError> {
        // A container's filesystems are the host's: its agent would freeze them for everyone.
        if self.store().definition(name)?.kind == Kind::Container {
            return Err(CoreError::Unsupported(format!(
                "instance {name} is a container, whose filesystems are the host's; fsfreeze is \
                 for VMs (a container's root directory can be copied as it is)"
            )));
        }
        let mut client = self.agent(name, AGENT_TIMEOUT)?;
        client.freeze().map_err(agent_error(name))
    }

    /// Thaws what [`Manager::freeze_guest`] froze; returns the mountpoints.
    pub fn thaw_guest(&self, name: &str) -> Result<Vec<String>, CoreError> {
        let mut client = self.agent(name, AGENT_TIMEOUT)?;
        client.thaw().map_err(agent_error(name))
    }

    /// Resets the identity of running instance `name` from inside (corral-sysprep's
    /// operations, the defaults when `operations` is `None`); returns the report's lines.
    pub fn sysprep_guest(
        &self,
        name: &str,
        operations: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<String>, CoreError> {
        let mut client = self.agent(name, AGENT_TIMEOUT)?;
        client
            .sysprep(operations, dry_run)
            .map_err(agent_error(name))
    }

    /// Asks a VM's agent to power the guest off, if it answers at once: whether it agreed.
    /// Only for a VM whose power-off ends its run (`on_poweroff = "destroy"`): one that would
    /// restart is stopped by its supervisor, which knows the host asked.
    pub(crate) fn shut_down_through_agent(&self, name: &str) -> bool {
        let ends_at_poweroff = self.store().definition(name).is_ok_and(|definition| {
            definition.kind == Kind::Vm && definition.on_poweroff == Action::Destroy
        });
        if !ends_at_poweroff {
            return false;
        }
        match self
            .agent(name, AGENT_STOP_PROBE_TIMEOUT)
            .and_then(|mut client| client.shutdown(false).map_err(agent_error(name)))
        {
            Ok(()) => true,
            Err(err) => {
                tracing::info!("{}; shutting {name} down without it", error_chain(&err));
                false
            }
        }
    }
}

/// Where `pull` writes: `local`, or the remote file's name in it when it is a directory.
pub fn pull_destination(remote: &str, local: &Path) -> PathBuf {
    match Path::new(remote).file_name() {
        Some(file_name) if local.is_dir() => local.join(file_name),
        _ => local.to_path_buf(),
    }
}

fn agent_error(name: &str) -> impl FnOnce(corral_agent::ClientError) -> CoreError {
    let name = name.to_string();
    move |source| CoreError::Agent { name, source }
}

/// A private temp file in `dir` that `persist` renames into place.
fn tempfile_in(dir: &Path) -> Result<tempfile::NamedTempFile, CoreError> {
    tempfile::Builder::new()
        .prefix(".corral-pull-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(CoreError::io("create a file in", dir))
}
