//! The VM driver: the supervisor is the VMM process itself (`corral vmm run`), one per VM.

use std::path::PathBuf;
use std::process::Command;

use corral_vmm::config::{DiskConfig, MacAddress, NicConfig, SerialTarget, VmConfig};

use crate::definition::{Definition, DiskFormat, Kind};
use crate::driver::{disk_source, Driver, InstancePaths};
use crate::error::CoreError;
use crate::volume::Pool;

/// Runs VMs with `EXE vmm run`.
pub struct VmDriver {
    exe: PathBuf,
    pool: Pool,
}

impl VmDriver {
    /// `exe` is the corral binary that provides `vmm run`; `pool` resolves volume disks.
    pub fn new(exe: impl Into<PathBuf>, pool: Pool) -> Self {
        Self {
            exe: exe.into(),
            pool,
        }
    }

    /// The VMM configuration for `definition`, with the instance's sockets and log, its disks
    /// (pool volumes resolved) and its network interfaces (each with a MAC address that stays
    /// the same for the instance when the definition gives none).
    pub fn vm_config(
        &self,
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
        for (index, disk) in definition.disks.iter().enumerate() {
            let (path, format) = disk_source(&self.pool, paths, definition, index)?;
            let format = match format {
                None => None,
                Some(DiskFormat::Raw) => Some(corral_disk::DiskFormat::Raw),
                Some(DiskFormat::Qcow2) => Some(corral_disk::DiskFormat::Qcow2),
                Some(DiskFormat::Dir) => {
                    return Err(CoreError::Unsupported(format!(
                        "disks[{index}] is a directory, which a vm cannot use"
                    )))
                }
            };
            config.disks.push(DiskConfig {
                path,
                format,
                readonly: disk.readonly,
                serial: disk.serial.clone(),
            });
        }
        config.nics = definition
            .nics
            .iter()
            .enumerate()
            .map(|(index, nic)| NicConfig {
                mac: nic
                    .mac
                    .or_else(|| Some(stable_mac(&definition.uuid, index))),
                ..nic.clone()
            })
            .collect();
        Ok(config)
    }
}

/// The MAC address of interface `index` of the instance with `uuid` when its definition names
/// none: locally administered, and the same on every start.
pub fn stable_mac(uuid: &str, index: usize) -> MacAddress {
    MacAddress::local_from_seed(format!("{uuid}/nic{index}").as_bytes())
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
        let config = self.vm_config(definition, paths)?;
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
        let config = self.vm_config(definition, paths)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_definition(extra: &str) -> Definition {
        let text = format!(
            "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
             [boot]\nkernel = \"vmlinux\"\n{extra}"
        );
        let definition: Definition = toml::from_str(&text).unwrap();
        definition.validate().unwrap();
        definition
    }

    #[test]
    fn disks_become_virtio_disks_with_paths_and_pool_volumes_resolved() {
        let root = tempfile::tempdir().unwrap();
        let pool = Pool::default_in(root.path());
        std::fs::create_dir_all(pool.dir()).unwrap();
        std::fs::write(pool.dir().join("base.qcow2"), b"").unwrap();
        let driver = VmDriver::new("corral", pool.clone());
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = vm_definition(
            "[[disks]]\nvolume = \"base\"\nserial = \"root\"\n\
             [[disks]]\npath = \"data.raw\"\nformat = \"raw\"\nreadonly = true\n\
             [[disks]]\npath = \"/dev/sdz\"\n",
        );
        let config = driver.vm_config(&definition, &paths).unwrap();
        assert_eq!(
            config.disks,
            [
                DiskConfig {
                    path: pool.dir().join("base.qcow2"),
                    format: Some(corral_disk::DiskFormat::Qcow2),
                    readonly: false,
                    serial: Some("root".into()),
                },
                DiskConfig {
                    path: paths.dir.join("data.raw"),
                    format: Some(corral_disk::DiskFormat::Raw),
                    readonly: true,
                    serial: None,
                },
                DiskConfig {
                    path: "/dev/sdz".into(),
                    format: None,
                    readonly: false,
                    serial: None,
                },
            ]
        );
        let missing = vm_definition("[[disks]]\nvolume = \"nope\"\n");
        assert!(driver.vm_config(&missing, &paths).is_err());
    }

    #[test]
    fn nics_get_a_stable_mac_per_instance_and_interface_unless_given() {
        let root = tempfile::tempdir().unwrap();
        let driver = VmDriver::new("corral", Pool::default_in(root.path()));
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = vm_definition(
            "[[nics]]\nbridge = \"br0\"\n[[nics]]\ntap = \"tap7\"\n\
             [[nics]]\ntap = \"tap8\"\nmac = \"52:54:00:00:00:08\"\n",
        );
        let config = driver.vm_config(&definition, &paths).unwrap();
        let macs: Vec<MacAddress> = config.nics.iter().filter_map(|nic| nic.mac).collect();
        assert_eq!(macs.len(), 3);
        assert_eq!(macs[0], stable_mac(&definition.uuid, 0));
        assert_ne!(macs[0], macs[1]);
        assert_eq!(macs[2].to_string(), "52:54:00:00:00:08");
        assert_eq!(config.nics[0].bridge.as_deref(), Some("br0"));
        // The same definition gives the same addresses on the next start.
        assert_eq!(
            driver.vm_config(&definition, &paths).unwrap().nics,
            config.nics
        );
        config.validate().unwrap();
    }

    #[test]
    fn bad_nics_are_refused_with_their_field() {
        let text =
            "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
                    [boot]\nkernel = \"vmlinux\"\n[[nics]]\ntap = \"t0\"\nbridge = \"br0\"\n";
        let definition: Definition = toml::from_str(text).unwrap();
        let err = definition.validate().unwrap_err().to_string();
        assert!(
            err.contains("nics[0]") && err.contains("exactly one"),
            "{err}"
        );
        let container = "name = \"box\"\ntype = \"container\"\n\
                         uuid = \"0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11\"\n\
                         [container]\nrootfs = \"rootfs\"\n[[nics]]\ntap = \"t0\"\n";
        let definition: Definition = toml::from_str(container).unwrap();
        let err = definition.validate().unwrap_err().to_string();
        assert!(
            err.contains("`nics`") && err.contains("only for vms"),
            "{err}"
        );
    }
}
