//! The VM driver: the supervisor is the VMM process itself (`corral vmm run`), one per VM.

use std::path::PathBuf;
use std::process::Command;

use corral_vmm::config::{SerialTarget, VmConfig};

use crate::definition::{Definition, Kind};
use crate::driver::{Driver, InstancePaths};
use crate::error::CoreError;

/// Runs VMs with `EXE vmm run`.
pub struct VmDriver {
    exe: PathBuf,
}

impl VmDriver {
    /// `exe` is the corral binary that provides `vmm run`.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        Self { exe: exe.into() }
    }

    /// The VMM configuration for `definition`, with the instance's sockets and log.
    pub fn vm_config(
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<VmConfig, CoreError> {
        let boot = definition.boot.as_ref().ok_or_else(|| {
            CoreError::Unsupported(format!(
                "instance {} has no [boot] section",
                definition.name
            ))
        })?;
        let mut config = VmConfig::new(paths.resolve(&boot.kernel));
        config.initrd = boot.initrd.as_ref().map(|p| paths.resolve(p));
        if let Some(cmdline) = &boot.cmdline {
            config.cmdline = cmdline.clone();
        }
        config.vcpus = definition.cpus;
        config.memory = definition.memory;
        config.serial = SerialTarget::Socket(paths.console_socket());
        config.console_log = Some(paths.console_log());
        config.control_socket = Some(paths.control_socket());
        config.on_poweroff = definition.on_poweroff;
        config.on_reboot = definition.on_reboot;
        config.on_crash = definition.on_crash;
        Ok(config)
    }
}

impl Driver for VmDriver {
    /// The VMM is the VM: when its process is gone, so are the vCPUs. Only its sockets remain,
    /// and the next VMM replaces those.
    fn clean_up_lost_run(&self, _name: &str, _paths: &InstancePaths) {}

    fn check_resources(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        debug_assert_eq!(definition.kind, Kind::Vm);
        let config = Self::vm_config(definition, paths)?;
        if !config.kernel.is_file() {
            return Err(CoreError::Missing {
                what: "kernel",
                path: config.kernel,
            });
        }
        if let Some(initrd) = config.initrd.filter(|i| !i.is_file()) {
            return Err(CoreError::Missing {
                what: "initrd",
                path: initrd,
            });
        }
        Ok(())
    }

    fn supervisor_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<Command, CoreError> {
        let config = Self::vm_config(definition, paths)?;
        config
            .validate()
            .map_err(|e| CoreError::Unsupported(e.to_string()))?;
        let runtime = paths.runtime_dir();
        let config_path = runtime.join("vm.toml");
        let text = toml::to_string_pretty(&config)
            .map_err(|e| CoreError::Unsupported(format!("cannot write the vm config: {e}")))?;
        corral_host::atomic::write_file(&config_path, text.as_bytes(), 0o644)?;
        let mut command = Command::new(&self.exe);
        command
            .arg("vmm")
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--exit-file")
            .arg(paths.exit_record());
        Ok(command)
    }
}
