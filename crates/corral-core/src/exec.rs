//! `exec`: a command in a running instance. A VM's runs under its guest agent (and a
//! container's too when asked: `through_agent`); a container's runs in the container's
//! namespaces and cgroup through the engine, with the container's own process settings.

use corral_container::{Container, ExecCommand};
use corral_host::terminal::WindowSize;

use crate::container::ContainerDriver;
use crate::definition::Kind;
use crate::state::Status;
use crate::{CoreError, Manager};

/// A command to run in an instance, as `corral exec` takes it: what the API's exec websocket
/// receives first.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Added to the environment, `NAME=value`.
    #[serde(default)]
    pub env: Vec<String>,
    /// The working directory inside the instance.
    #[serde(default)]
    pub cwd: Option<String>,
    /// On a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Through the guest agent, as in a VM, rather than the container engine.
    #[serde(default)]
    pub agent: bool,
    /// The terminal's size, with `tty`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub window: Option<WindowSize>,
}

impl Manager {
    /// `corral exec` of `request` in instance `name`, as a process of its own (the corral
    /// binary on the same root) whose stdio a front end relays: the engine enters a container
    /// only from a single-threaded program, which a server is not.
    pub fn exec_process(
        &self,
        name: &str,
        request: &ExecRequest,
    ) -> Result<std::process::Command, CoreError> {
        crate::definition::validate_name(name).map_err(crate::store::StoreError::from)?;
        if request.command.is_empty() {
            return Err(CoreError::Unsupported(
                "an exec needs a command to run: give `command` a program and its arguments".into(),
            ));
        }
        let mut command = std::process::Command::new(self.exe());
        command.arg("--root").arg(self.store().root());
        command.arg("exec").arg(name);
        if request.tty {
            command.arg("--tty");
        }
        if request.agent {
            command.arg("--agent");
        }
        for variable in &request.env {
            command.arg("--env").arg(variable);
        }
        if let Some(cwd) = &request.cwd {
            command.arg("--cwd").arg(cwd);
        }
        command.arg("--").args(&request.command);
        Ok(command)
    }

    /// True when a command for instance `name` runs through its guest agent: always for a VM,
    /// for a container when `through_agent` asks for it.
    pub fn execs_through_agent(&self, name: &str, through_agent: bool) -> Result<bool, CoreError> {
        Ok(through_agent || self.store().definition(name)?.kind == Kind::Vm)
    }

    /// Runs `command` in running container `name` in the foreground of the calling program
    /// (its terminal relayed to the caller's stdio, or the caller's stdio inherited; the
    /// caller's signals forwarded) and returns its exit code. The engine enters a container
    /// only from a sealed copy of the running binary: the calling program re-executes itself
    /// from one first unless it already runs from one (`corral_container::sealed_exe`).
    pub fn exec_in_container(&self, name: &str, command: &ExecCommand) -> Result<i32, CoreError> {
        if self.store().definition(name)?.kind != Kind::Container {
            return Err(CoreError::Unsupported(format!(
                "instance {name} is a VM: its commands run through its guest agent"
            )));
        }
        match self.state(name)?.status {
            Status::Running => {}
            Status::Paused => return Err(CoreError::Paused(name.to_owned())),
            _ => return Err(CoreError::NotRunning(name.to_owned())),
        }
        let engine_root = ContainerDriver::engine_root(&self.paths(name)?);
        corral_container::sealed_exe::ensure(&engine_root)?;
        let container = Container::load(&engine_root, name)?;
        Ok(container.exec_foreground(command)?)
    }
}
