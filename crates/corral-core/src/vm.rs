//! The VM driver: the supervisor is the VMM process itself (`corral vmm run`), one per VM,
//! always jailed: it sees only the instance's runtime directory, runs as the `corral` user and
//! sits in the instance's cgroup (`/corral-instances/NAME.UUIDPREFIX.DIRHASH`), which this driver creates with the
//! instance's limits before each start.

use std::path::PathBuf;
use std::process::Command;

use corral_container::cgroups::{Cgroup, Layout};
use corral_net::Networks;
use corral_vmm::config::{DiskConfig, NicConfig, SerialTarget, VmConfig, VsockConfig};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use corral_host::atomic::PRIVATE_FILE_MODE;

use crate::definition::{BootFrom, Definition, Kind};
use crate::disks::{backing_places, disk_source, pin_formats, preflight};
use crate::driver::{instance_cgroup, Driver, Incoming, InstancePaths};
use crate::error::CoreError;
use crate::networks::nic_network;
use crate::nic::{derived_interface, stable_mac};
use crate::volume::Pool;

/// What a VMM may use beyond its guest's memory: the binary and its heap, thread stacks, the
/// virtio-blk bounce buffers and vsock connection buffers, and the page cache of disk I/O
/// (reclaimed before the limit bites); plus, per GiB of guest memory, what KVM charges for its
/// page tables. A whole jailed Linux boot with 256 MiB of guest memory peaked at 21 MiB
/// (guest pages it touched included) on the development host.
pub const VMM_MEMORY_OVERHEAD: u64 = 64 << 20;
/// KVM's share per byte of guest memory (1/32).
const VMM_MEMORY_OVERHEAD_SHIFT: u32 = 5;

/// The VMM-only executable, looked for beside `corral`.
pub const VMM_EXECUTABLE: &str = "corral-vmm";

/// Runs VMs with the `corral-vmm` beside corral's executable (`corral vmm run`'s arguments,
/// without the rest of corral to page in), or `EXE vmm run` where there is none.
pub struct VmDriver {
    /// The program and the arguments that make it run a VM.
    vmm: (PathBuf, &'static [&'static str]),
    pool: Pool,
    networks: Networks,
}

impl VmDriver {
    /// `exe` is the corral binary (its `corral-vmm`, else its own `vmm run`, runs VMs); `pool`
    /// resolves volume disks and `networks` the networks nics name.
    pub fn new(exe: impl Into<PathBuf>, pool: Pool, networks: Networks) -> Self {
        let exe = exe.into();
        let dedicated = exe.with_file_name(VMM_EXECUTABLE);
        let vmm = if dedicated.is_file() {
            (dedicated, &[][..])
        } else {
            (exe, &["vmm", "run"][..])
        };
        Self {
            vmm,
            pool,
            networks,
        }
    }

    /// The VMM configuration for `definition`, with the instance's sockets and log, its disks
    /// (pool volumes resolved; each with its recorded format and the places its backing files may
    /// be) and its network interfaces (each with a MAC address that stays the same for the
    /// instance when the definition gives none).
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
        let mut config = match boot.from {
            BootFrom::Kernel => {
                let mut config = VmConfig::new(paths.resolve(&boot.kernel));
                config.initrd = boot.initrd.as_ref().map(|p| paths.resolve(p));
                config
            }
            // Where the start copies the disk's kernel ([`VmDriver::extract_boot`]).
            BootFrom::Disk => VmConfig::new(boot_dir(paths).join("kernel")),
        };
        if let Some(cmdline) = &boot.cmdline {
            config.cmdline = cmdline.clone();
        }
        config.vcpus = definition.cpus;
        config.memory = definition.memory;
        config.serial = SerialTarget::Socket(paths.console_socket());
        config.console_log = Some(paths.console_log());
        config.control_socket = Some(paths.control_socket());
        // Where the host reaches the guest agent (vsock port 1024 through this socket).
        config.vsock = Some(VsockConfig {
            cid: crate::agent::VM_GUEST_CID,
            socket: crate::agent::vm_vsock_socket(paths),
        });
        // Every instance VM can migrate live (`corral migrate`), which needs the pages its guest
        // writes: KVM's dirty log costs each page one fault after each pass, and huge pages.
        config.track_dirty_pages = true;
        config.on_poweroff = definition.on_poweroff;
        config.on_reboot = definition.on_reboot;
        config.on_crash = definition.on_crash;
        config.restart_limit = definition.restart_limit;
        for (index, disk) in definition.disks.iter().enumerate() {
            let (path, format) = disk_source(&self.pool, paths, definition, index)?;
            let Some(format) = format else {
                return Err(CoreError::Unsupported(format!(
                    "disks[{index}] ({}) has no recorded format, and corral does not guess it at \
                     start (a guest could have written a qcow2 header into a raw disk); add \
                     `format = \"raw\"` or `format = \"qcow2\"` to it with `corral config edit \
                     {}`",
                    path.display(),
                    definition.name
                )));
            };
            let Some(format) = format.image_format() else {
                return Err(CoreError::Unsupported(format!(
                    "disks[{index}] is a directory, which a vm cannot use"
                )));
            };
            config.disks.push(DiskConfig {
                path,
                format: Some(format),
                allow_backing: Some(backing_places(&self.pool, paths, definition, index)),
                readonly: disk.readonly,
                serial: disk.serial.clone(),
            });
        }
        if definition.cloud_init.is_some() {
            // Written by each start ([`crate::seed::write_image`]), after the user's disks so
            // their names in the guest (vda, vdb, ...) stay as they were.
            config.disks.push(DiskConfig {
                path: crate::seed::image_path(paths),
                format: Some(corral_disk::DiskFormat::Raw),
                allow_backing: Some(Vec::new()),
                readonly: true,
                serial: Some("cidata".into()),
            });
        }
        for (index, nic) in definition.nics.iter().enumerate() {
            // A nic on a network gets a tap on the network's bridge; every tap is named here,
            // so the nic's filter can name it before the VMM makes it.
            let bridge = nic_network(&self.networks, definition, index, nic)?
                .map(|network| network.bridge)
                .or_else(|| nic.bridge.clone());
            config.nics.push(NicConfig {
                tap: Some(host_interface(definition, index)),
                bridge,
                mac: Some(
                    nic.mac
                        .unwrap_or_else(|| stable_mac(&definition.uuid, index)),
                ),
            });
        }
        Ok(config)
    }
}

/// The host's tap of nic `index`: the definition's `tap`, else (a nic on a bridge) `vt`, ten hex
/// digits of the UUID and the index, named here so the nic's filter can name it.
pub fn host_interface(definition: &Definition, index: usize) -> String {
    definition
        .nics
        .get(index)
        .and_then(|nic| nic.tap.clone())
        .unwrap_or_else(|| derived_interface("vt", &definition.uuid, index))
}

/// The anti-spoofing filters of a VM's nics on a bridge (see `corral_net::filter`).
fn filters(definition: &Definition) -> Vec<corral_net::NicFilter> {
    definition
        .nics
        .iter()
        .enumerate()
        .filter(|(_, nic)| nic.on_bridge() && nic.filtered())
        .map(|(index, nic)| corral_net::NicFilter {
            interface: host_interface(definition, index),
            mac: nic
                .mac
                .unwrap_or_else(|| stable_mac(&definition.uuid, index))
                .0,
            ipv4: nic.ip.map(|ip| ip.address),
        })
        .collect()
}

/// Removes the filters of the VM's nics on a bridge (those there are: the definition may have
/// been edited since the start).
fn remove_filters(definition: &Definition) {
    for (index, _) in definition
        .nics
        .iter()
        .enumerate()
        .filter(|(_, nic)| nic.on_bridge())
    {
        let interface = host_interface(definition, index);
        if let Err(err) = corral_net::filter::remove(None, &interface) {
            tracing::warn!("cannot remove the filter of {interface}: {err}");
        }
    }
}

/// Where a VM booting from its disk gets the disk's kernel and initrd at each start.
fn boot_dir(paths: &InstancePaths) -> PathBuf {
    paths.runtime_dir().join("boot")
}

/// The first disk of a VM booting from its disk, opened read-only as the VMM opens it (its
/// recorded format, its backing files only from its allowed places).
fn open_boot_disk(
    definition: &Definition,
    config: &VmConfig,
) -> Result<(PathBuf, Box<dyn corral_disk::Disk>), CoreError> {
    let Some(disk) = config.disks.first() else {
        return Err(CoreError::Unsupported(format!(
            "instance {} boots from its disk but has none; add one with `corral config edit {}`",
            definition.name, definition.name
        )));
    };
    let mut options = corral_disk::OpenOptions::read_only();
    options.format = disk.format;
    if let Some(places) = &disk.allow_backing {
        options.backing = corral_disk::BackingPolicy::Within(places.clone());
    }
    let opened =
        corral_disk::open(&disk.path, options).map_err(|source| CoreError::DiskUnusable {
            instance: definition.name.clone(),
            index: 0,
            source,
        })?;
    Ok((disk.path.clone(), opened))
}

/// Copies the kernel and initrd that the first disk boots into [`boot_dir`] and points `config`
/// at them; the definition's `cmdline`, when given, replaces the disk's.
fn extract_boot(
    definition: &Definition,
    paths: &InstancePaths,
    config: &mut VmConfig,
) -> Result<(), CoreError> {
    let (path, disk) = open_boot_disk(definition, config)?;
    let dir = boot_dir(paths);
    corral_host::atomic::create_private_dir_all(&dir).map_err(CoreError::io("create", &dir))?;
    let extracted =
        corral_image::bootdisk::extract_boot(disk.as_ref(), &dir).map_err(|source| {
            CoreError::BootFromDisk {
                instance: definition.name.clone(),
                disk: path,
                source,
            }
        })?;
    config.kernel = extracted.kernel;
    config.initrd = extracted.initrd;
    if definition
        .boot
        .as_ref()
        .and_then(|b| b.cmdline.as_ref())
        .is_none()
    {
        config.cmdline = extracted.cmdline;
    }
    Ok(())
}

fn boots_from_disk(definition: &Definition) -> bool {
    definition
        .boot
        .as_ref()
        .is_some_and(|boot| boot.from == BootFrom::Disk)
}

/// The cgroup limits of a VM instance: its memory, plus [`VMM_MEMORY_OVERHEAD`] and 1/32 of it
/// (swap included where the host accounts it, so the VMM cannot swap past it), its CPU weight
/// and pids limit.
pub fn cgroup_resources(definition: &Definition) -> Result<LinuxResources, CoreError> {
    let invalid = |source: oci_spec::OciSpecError| CoreError::OciSpec {
        what: "cgroup limits",
        source,
    };
    let guest = definition.memory.0;
    let limit = guest
        .saturating_add(VMM_MEMORY_OVERHEAD)
        .saturating_add(guest >> VMM_MEMORY_OVERHEAD_SHIFT);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut resources = LinuxResourcesBuilder::default().memory(
        LinuxMemoryBuilder::default()
            .limit(limit)
            .swap(limit)
            .build()
            .map_err(invalid)?,
    );
    if let Some(weight) = definition.limits.cpu_weight {
        // cgroup v1 shares: weight 100 is the default share of 1024.
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .shares(weight * 1024 / 100)
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(pids) = definition.limits.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()
                .map_err(invalid)?,
        );
    }
    resources.build().map_err(invalid)
}

/// The cgroup of VM instance `definition`, in this host's layout.
fn open_cgroup(
    definition: &Definition,
    paths: &InstancePaths,
) -> Result<Box<dyn Cgroup>, CoreError> {
    let layout = Layout::detect().map_err(|source| CoreError::Cgroup {
        name: definition.name.clone(),
        source,
    })?;
    Ok(layout.open(&instance_cgroup(definition, paths)))
}

impl Driver for VmDriver {
    /// The VMM is the VM: when its process is gone, so are the vCPUs. Its sockets remain (the
    /// next VMM replaces them); its empty cgroup is removed.
    fn clean_up_lost_run(&self, name: &str, paths: &InstancePaths) {
        let file = paths.dir.join(crate::store::DEFINITION_FILE);
        let Some(definition) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| Definition::parse(&text, &file).ok())
        else {
            return;
        };
        if let Ok(cgroup) = open_cgroup(&definition, paths) {
            if let Err(err) = cgroup.destroy() {
                tracing::warn!("cannot remove the cgroup of instance {name}: {err}");
            }
        }
        remove_filters(&definition);
    }

    fn settle_definition(
        &self,
        definition: &mut Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        pin_formats(definition, paths)?;
        crate::seed::check(definition, paths, &self.networks)
    }

    fn log_path_in_environment(&self) -> bool {
        false
    }

    fn check_resources(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        debug_assert_eq!(definition.kind, Kind::Vm);
        let config = self.vm_config(definition, paths)?;
        if boots_from_disk(definition) {
            // Read (not copied) here, so a create or start fails early and says why.
            let (path, disk) = open_boot_disk(definition, &config)?;
            return corral_image::bootdisk::find_boot(disk.as_ref())
                .map(drop)
                .map_err(|source| CoreError::BootFromDisk {
                    instance: definition.name.clone(),
                    disk: path,
                    source,
                });
        }
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
        let mut config = self.vm_config(definition, paths)?;
        if boots_from_disk(definition) {
            extract_boot(definition, paths, &mut config)?;
        }
        crate::seed::write_image(definition, paths, &self.networks)?;
        config
            .validate()
            .map_err(|e| CoreError::VmConfig(Box::new(e)))?;
        preflight(&self.pool, paths, definition)?;
        self.vmm_command(definition, paths, &config)
    }

    fn incoming_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
        incoming: &Incoming,
    ) -> Result<Command, CoreError> {
        if boots_from_disk(definition) {
            return Err(CoreError::Unsupported(format!(
                "instance {} boots the kernel of its disk, which a live migration does not \
                 carry yet; boot it from a kernel file both hosts have (`[boot] from = \
                 \"kernel\"`) to migrate it",
                definition.name
            )));
        }
        self.check_resources(definition, paths)?;
        let config = self.vm_config(definition, paths)?;
        // No seed is written (the guest has the source's open: it came with the migration), no
        // disk is checked or opened: the source VM runs on them until its last pause, and the
        // VMM opens them only then.
        config
            .validate()
            .map_err(|e| CoreError::VmConfig(Box::new(e)))?;
        let mut command = self.vmm_command(definition, paths, &config)?;
        command
            .arg("--incoming")
            .arg(format!("unix:{}", incoming.socket.display()))
            .arg("--migration-token-file")
            .arg(&incoming.token_file);
        Ok(command)
    }
}

impl VmDriver {
    /// Writes `config` into the runtime directory, makes the instance's cgroup and the nics'
    /// filters, and returns the command that runs the VMM on `config`.
    fn vmm_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
        config: &VmConfig,
    ) -> Result<Command, CoreError> {
        let runtime = paths.runtime_dir();
        let config_path = runtime.join("vm.toml");
        let text = toml::to_string_pretty(config).map_err(CoreError::VmConfigEncode)?;
        corral_host::atomic::write_file(&config_path, text.as_bytes(), PRIVATE_FILE_MODE)?;
        let cgroup_error = |source| CoreError::Cgroup {
            name: definition.name.clone(),
            source,
        };
        let cgroup = open_cgroup(definition, paths)?;
        // Left by an earlier run (an empty cgroup outlives its VMM, which cannot remove it).
        cgroup.destroy().map_err(cgroup_error)?;
        cgroup.create().map_err(cgroup_error)?;
        fail::fail_point!("start.cgroup-created");
        cgroup
            .apply(&cgroup_resources(definition)?)
            .map_err(cgroup_error)?;
        // Before the VMM makes the taps: the filters name them, so no frame passes unchecked.
        for filter in filters(definition) {
            corral_net::filter::add(None, &filter).map_err(|source| {
                CoreError::InstanceNetwork {
                    name: definition.name.clone(),
                    source: source.into(),
                }
            })?;
        }
        let (program, run) = &self.vmm;
        let mut command = Command::new(program);
        command
            .args(*run)
            .arg("--config")
            .arg(&config_path)
            .arg("--exit-file")
            .arg(paths.exit_record())
            .arg("--jail")
            .arg(&runtime)
            .arg("--cgroup")
            .arg(cgroup.path())
            .arg("--log-file")
            .arg(paths.supervisor_log())
            // The jailed VMM gets nothing from this environment but its log filter.
            .env_clear();
        if let Some(filter) = std::env::var_os("CORRAL_LOG") {
            command.env("CORRAL_LOG", filter);
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::networks_in;

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
    fn disks_become_virtio_disks_with_recorded_formats_and_confined_backing_files() {
        let root = tempfile::tempdir().unwrap();
        let pool = Pool::default_in(root.path());
        std::fs::create_dir_all(pool.dir()).unwrap();
        std::fs::write(pool.dir().join("base.qcow2"), b"").unwrap();
        let driver = VmDriver::new("corral", pool.clone(), networks_in(root.path()));
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = vm_definition(
            "[[disks]]\nvolume = \"base\"\nserial = \"root\"\n\
             allow_backing = [\"/images/debian.qcow2\", \"bases\"]\n\
             [[disks]]\npath = \"data.raw\"\nformat = \"raw\"\nreadonly = true\n",
        );
        let config = driver.vm_config(&definition, &paths).unwrap();
        assert_eq!(
            config.disks,
            [
                DiskConfig {
                    path: pool.dir().join("base.qcow2"),
                    format: Some(corral_disk::DiskFormat::Qcow2),
                    allow_backing: Some(vec![
                        pool.dir().to_path_buf(),
                        "/images/debian.qcow2".into(),
                        paths.dir.join("bases"),
                    ]),
                    readonly: false,
                    serial: Some("root".into()),
                },
                DiskConfig {
                    path: paths.dir.join("data.raw"),
                    format: Some(corral_disk::DiskFormat::Raw),
                    allow_backing: Some(vec![pool.dir().to_path_buf()]),
                    readonly: true,
                    serial: None,
                },
            ]
        );
        let missing = vm_definition("[[disks]]\nvolume = \"nope\"\n");
        assert!(driver.vm_config(&missing, &paths).is_err());
        // A path disk whose format was never recorded is not guessed at start.
        let unpinned = vm_definition("[[disks]]\npath = \"/dev/sdz\"\n");
        let err = driver.vm_config(&unpinned, &paths).unwrap_err().to_string();
        assert!(err.contains("no recorded format"), "{err}");
        // A volume's format is its suffix; a definition saying otherwise is refused.
        let wrong = vm_definition("[[disks]]\nvolume = \"base\"\nformat = \"raw\"\n");
        assert!(driver.vm_config(&wrong, &paths).is_err());
    }

    #[test]
    fn every_vm_gets_a_vsock_device_whose_socket_the_agent_client_uses() {
        let root = tempfile::tempdir().unwrap();
        let driver = VmDriver::new(
            "corral",
            Pool::default_in(root.path()),
            networks_in(root.path()),
        );
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = vm_definition("");
        let vsock = driver
            .vm_config(&definition, &paths)
            .unwrap()
            .vsock
            .unwrap();
        assert_eq!(vsock.cid, crate::agent::VM_GUEST_CID);
        assert_eq!(
            crate::agent::transport(&definition, &paths).unwrap(),
            corral_agent::Transport::Vsock {
                socket: vsock.socket,
                port: corral_agent::DEFAULT_VSOCK_PORT
            }
        );
    }

    #[test]
    fn a_cloud_init_seed_is_a_read_only_raw_disk_after_the_users() {
        let root = tempfile::tempdir().unwrap();
        let driver = VmDriver::new(
            "corral",
            Pool::default_in(root.path()),
            networks_in(root.path()),
        );
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let plain = vm_definition("[[disks]]\npath = \"data.raw\"\nformat = \"raw\"\n");
        assert_eq!(driver.vm_config(&plain, &paths).unwrap().disks.len(), 1);
        let seeded =
            vm_definition("[[disks]]\npath = \"data.raw\"\nformat = \"raw\"\n[cloud_init]\n");
        let disks = driver.vm_config(&seeded, &paths).unwrap().disks;
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].path, paths.dir.join("data.raw"));
        assert_eq!(
            disks[1],
            DiskConfig {
                path: paths.dir.join("cidata.img"),
                format: Some(corral_disk::DiskFormat::Raw),
                allow_backing: Some(Vec::new()),
                readonly: true,
                serial: Some("cidata".into()),
            }
        );
    }

    #[test]
    fn a_nic_on_a_network_gets_a_tap_on_the_networks_bridge() {
        let root = tempfile::tempdir().unwrap();
        let driver = VmDriver::new(
            "corral",
            Pool::default_in(root.path()),
            networks_in(root.path()),
        );
        let paths = InstancePaths::new(root.path().join("instances/web"));
        std::fs::create_dir_all(root.path().join("networks/lab")).unwrap();
        std::fs::write(
            root.path().join("networks/lab/network.toml"),
            "name = \"lab\"\nbridge = \"corral-lab\"\nipv4 = \"10.0.3.1/24\"\n",
        )
        .unwrap();
        let definition = vm_definition("[[nics]]\nnetwork = \"lab\"\nip = \"10.0.3.10\"\n");
        let config = driver.vm_config(&definition, &paths).unwrap();
        assert_eq!(config.nics[0].bridge.as_deref(), Some("corral-lab"));
        // Named here, like every tap on a bridge, so its filter can name it.
        assert_eq!(config.nics[0].tap.as_deref(), Some("vtf4e2e3b47f0"));
        assert_eq!(filters(&definition)[0].interface, "vtf4e2e3b47f0");
        assert_eq!(config.nics[0].mac, Some(stable_mac(&definition.uuid, 0)));
        let unknown = vm_definition("[[nics]]\nnetwork = \"nowhere\"\n");
        let err = driver.vm_config(&unknown, &paths).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            chain.contains("nics[0] of instance")
                && chain.contains("network nowhere does not exist"),
            "{chain}"
        );
    }

    #[test]
    fn nics_get_a_stable_mac_per_instance_and_interface_unless_given() {
        let root = tempfile::tempdir().unwrap();
        let driver = VmDriver::new(
            "corral",
            Pool::default_in(root.path()),
            networks_in(root.path()),
        );
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let definition = vm_definition(
            "[[nics]]\nbridge = \"br0\"\n[[nics]]\ntap = \"tap7\"\n\
             [[nics]]\ntap = \"tap8\"\nmac = \"52:54:00:00:00:08\"\n",
        );
        let config = driver.vm_config(&definition, &paths).unwrap();
        let macs: Vec<corral_vmm::config::MacAddress> =
            config.nics.iter().filter_map(|nic| nic.mac).collect();
        assert_eq!(macs.len(), 3);
        assert_eq!(macs[0], stable_mac(&definition.uuid, 0));
        assert_ne!(macs[0], macs[1]);
        assert_eq!(macs[2].to_string(), "52:54:00:00:00:08");
        assert_eq!(config.nics[0].bridge.as_deref(), Some("br0"));
        // A nic on a bridge gets a tap named for its filter; a named tap keeps its name.
        assert_eq!(config.nics[0].tap.as_deref(), Some("vtf4e2e3b47f0"));
        assert_eq!(config.nics[1].tap.as_deref(), Some("tap7"));
        let filters = filters(&definition);
        assert_eq!(filters.len(), 1, "only nics on a bridge are filtered");
        assert_eq!(filters[0].interface, "vtf4e2e3b47f0");
        assert_eq!(filters[0].mac, macs[0].0);
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
                    [boot]\nkernel = \"vmlinux\"\n[[nics]]\nmac = \"52:54:00:00:00:08\"\n";
        let definition: Definition = toml::from_str(text).unwrap();
        let err = definition.validate().unwrap_err().to_string();
        assert!(
            err.contains("nics[0]") && err.contains("give `network`, `tap`, `bridge`"),
            "{err}"
        );
        let container = "name = \"box\"\ntype = \"container\"\n\
                         uuid = \"0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11\"\n\
                         [container]\nrootfs = \"rootfs\"\n[[nics]]\ntap = \"t0\"\n";
        let definition: Definition = toml::from_str(container).unwrap();
        let err = definition.validate().unwrap_err().to_string();
        assert!(
            err.contains("nics[0].tap") && err.contains("only for vms"),
            "{err}"
        );
    }

    fn driver_in(root: &std::path::Path) -> VmDriver {
        VmDriver::new("corral", Pool::default_in(root), networks_in(root))
    }

    #[test]
    fn the_vm_config_carries_the_boot_size_sockets_and_policies_of_the_definition() {
        let root = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let text = "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
                    cpus = 3\nmemory = \"768M\"\non_reboot = \"destroy\"\non_crash = \"restart\"\n\
                    [restart_limit]\nburst = 2\ninterval_secs = 60\n\
                    [boot]\nkernel = \"vmlinux\"\ninitrd = \"/boot/initrd\"\ncmdline = \"console=ttyS0 quiet\"\n";
        let definition: Definition = toml::from_str(text).unwrap();
        definition.validate().unwrap();
        let config = driver_in(root.path())
            .vm_config(&definition, &paths)
            .unwrap();
        assert_eq!(
            config.kernel,
            paths.dir.join("vmlinux"),
            "relative to the instance"
        );
        assert_eq!(
            config.initrd.as_deref(),
            Some(std::path::Path::new("/boot/initrd"))
        );
        assert_eq!(config.cmdline, "console=ttyS0 quiet");
        assert_eq!((config.vcpus, config.memory.0), (3, 768 << 20));
        assert_eq!(config.serial, SerialTarget::Socket(paths.console_socket()));
        assert_eq!(config.console_log, Some(paths.console_log()));
        assert_eq!(config.control_socket, Some(paths.control_socket()));
        assert_eq!(
            (config.on_poweroff, config.on_reboot, config.on_crash),
            (
                definition.on_poweroff,
                corral_control::policy::Action::Destroy,
                corral_control::policy::Action::Restart
            )
        );
        assert_eq!(
            (
                config.restart_limit.burst,
                config.restart_limit.interval_secs
            ),
            (2, 60)
        );
        assert!(config.disks.is_empty() && config.nics.is_empty());
    }

    #[test]
    fn a_vm_booting_from_its_disk_is_pointed_at_the_kernel_each_start_extracts() {
        let root = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(root.path().join("instances/web"));
        let text =
            "name = \"web\"\ntype = \"vm\"\nuuid = \"f4e2e3b4-7f3d-4b1b-8b3b-3b4b1b7f3d4b\"\n\
                    [boot]\nfrom = \"disk\"\n[[disks]]\npath = \"system.raw\"\nformat = \"raw\"\n";
        let definition: Definition = toml::from_str(text).unwrap();
        definition.validate().unwrap();
        let config = driver_in(root.path())
            .vm_config(&definition, &paths)
            .unwrap();
        assert_eq!(config.kernel, paths.runtime_dir().join("boot/kernel"));
        assert_eq!(config.initrd, None);
        assert_eq!(config.disks[0].path, paths.dir.join("system.raw"));
    }

    #[test]
    fn a_directory_volume_is_refused_for_a_vm() {
        let root = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(root.path().join("instances/web"));
        std::fs::create_dir_all(Pool::default_in(root.path()).dir().join("data")).unwrap();
        let definition = vm_definition("[[disks]]\nvolume = \"data\"\n");
        let err = driver_in(root.path())
            .vm_config(&definition, &paths)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "disks[0] is a directory, which a vm cannot use"
        );
    }

    #[test]
    fn the_cgroup_allows_the_guest_memory_plus_the_vmm_overhead_and_the_limits() {
        let definition = vm_definition("");
        let mut definition = Definition {
            memory: corral_vmm::config::MemorySize(1 << 30),
            ..definition
        };
        let resources = cgroup_resources(&definition).unwrap();
        let memory = resources.memory().as_ref().unwrap();
        let expected = (1i64 << 30) + (64 << 20) + (32 << 20);
        assert_eq!(
            (memory.limit(), memory.swap()),
            (Some(expected), Some(expected))
        );
        assert!(resources.cpu().is_none() && resources.pids().is_none());
        definition.limits.cpu_weight = Some(200);
        definition.limits.pids = Some(50);
        let resources = cgroup_resources(&definition).unwrap();
        assert_eq!(resources.cpu().as_ref().unwrap().shares(), Some(2048));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 50);
    }

    #[test]
    fn check_resources_names_a_missing_kernel_then_a_missing_initrd() {
        let root = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(root.path());
        let driver = driver_in(root.path());
        let definition = vm_definition("initrd = \"initrd.img\"\n");
        let err = driver.check_resources(&definition, &paths).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "kernel {} does not exist",
                root.path().join("vmlinux").display()
            )
        );
        std::fs::write(root.path().join("vmlinux"), b"").unwrap();
        let err = driver.check_resources(&definition, &paths).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "initrd {} does not exist",
                root.path().join("initrd.img").display()
            )
        );
        std::fs::write(root.path().join("initrd.img"), b"").unwrap();
        driver.check_resources(&definition, &paths).unwrap();
    }
}
