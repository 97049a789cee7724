//! `exec`: a command in a running instance. A VM's runs under its guest agent (and a
//! container's too when asked: `through_agent`); a container's runs in the container's
//! namespaces and cgroup through the engine, with the container's own process settings.

use corral_container::{Container, ExecCommand};

use crate::container::ContainerDriver;
use crate::definition::Kind;
use crate::state::Status;
use crate::{CoreError, Manager};

impl Manager {
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
