//! The container driver: the supervisor is `corral monitor`, the parent of the container's init,
//! running corral's container engine on an OCI bundle generated from the definition.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{
    Capabilities, Capability, HookBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, Spec, UserBuilder,
};

use corral_container::user::UserIds;
use corral_host::atomic::PRIVATE_FILE_MODE;

use crate::definition::{Definition, DiskFormat, Kind, UserNs};
use crate::driver::{Driver, InstancePaths};
use crate::error::CoreError;
use crate::userns::IdRange;
use crate::volume::Pool;
use corral_net::Networks;

/// The CFS period the CPU quota is expressed in.
const CPU_PERIOD_US: u64 = 100_000;

/// Capabilities of an instance's processes: podman's default set, which lets root in the
/// container manage its own files and users without reaching the host.
const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// Capabilities of a system container's processes in its own user namespace: LXC's default for
/// unprivileged containers, every capability but those that reach the host's kernel, clock or
/// security modules. systemd needs CAP_SYS_ADMIN for its mounts (/run, /run/lock, its
/// credentials); in a user namespace the kernel lets each act only on the container's own
/// namespaces and files.
const SYSTEM_CAPABILITIES: &[Capability] = &[
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysResource,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// Where a system container's init gets fresh tmpfs, as podman's `--systemd` gives: systemd
/// expects /run and /run/lock empty at boot, and /tmp cleared.
const SYSTEM_TMPFS: &[(&str, &str)] = &[
    ("/run", "mode=755,size=65536k"),
    ("/run/lock", "mode=1777,size=5120k"),
    ("/tmp", "mode=1777"),
];

/// The monitor-only executable, looked for beside `corral`.
pub const MONITOR_EXECUTABLE: &str = "corral-monitor";

/// Runs containers with the `corral-monitor` beside corral's executable (`corral monitor`'s
/// arguments, without the rest of corral to page in, which every monitor and every init until
/// its exec maps), or `EXE monitor` where there is none.
pub struct ContainerDriver {
    /// The corral binary: the system containers' `network-attach` hook.
    exe: PathBuf,
    /// The program and the arguments that make it run a monitor.
    monitor: (PathBuf, &'static [&'static str]),
    pool: Pool,
    networks: Networks,
    /// Where monitors keep compiled seccomp programs, shared by the root's containers.
    seccomp_cache: Option<PathBuf>,
}

impl ContainerDriver {
    /// `exe` is the corral binary (its `corral-monitor`, else its own `monitor`, supervises
    /// containers); `pool` resolves volume disks; `networks` the networks nics name.
    pub fn new(exe: impl Into<PathBuf>, pool: Pool, networks: Networks) -> Self {
        let exe = exe.into();
        let dedicated = exe.with_file_name(MONITOR_EXECUTABLE);
        let monitor = if dedicated.is_file() {
            (dedicated, &[][..])
        } else {
            (exe.clone(), &["monitor"][..])
        };
        Self {
            exe,
            monitor,
            pool,
            networks,
            seccomp_cache: None,
        }
    }

    /// Has the monitors keep compiled seccomp programs in `dir`, so that containers sharing a
    /// profile compile it once.
    pub fn with_seccomp_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.seccomp_cache = Some(dir.into());
        self
    }

    /// Where the container engine keeps this instance's container state.
    pub fn engine_root(paths: &InstancePaths) -> PathBuf {
        paths.runtime_dir().join("oci")
    }

    /// The generated OCI bundle directory.
    pub fn bundle_dir(paths: &InstancePaths) -> PathBuf {
        paths.runtime_dir().join("bundle")
    }

    fn disk_source(
        &self,
        paths: &InstancePaths,
        index: usize,
        definition: &Definition,
    ) -> Result<PathBuf, CoreError> {
        Ok(crate::disks::disk_source(&self.pool, paths, definition, index)?.0)
    }

    /// The OCI runtime spec for `definition`; `userns` is the host range its ids map to, when it
    /// has a user namespace.
    pub fn spec(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
        userns: Option<IdRange>,
    ) -> Result<Spec, CoreError> {
        let container = definition.container.as_ref().ok_or_else(|| {
            CoreError::Unsupported(format!(
                "instance {} has no [container] section",
                definition.name
            ))
        })?;
        let invalid = |source: oci_spec::OciSpecError| CoreError::OciSpec {
            what: "container spec",
            source,
        };
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap_or_default();
        root.set_path(paths.resolve(&container.rootfs));
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        spec.set_hostname(Some(
            container
                .hostname
                .clone()
                .unwrap_or_else(|| definition.name.clone()),
        ));

        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(container.effective_command()));
        process.set_terminal(Some(container.tty));
        let mut env = vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "TERM=xterm".to_string(),
        ];
        env.extend(container.env.iter().cloned());
        process.set_env(Some(env));
        if let Some(cwd) = &container.cwd {
            process.set_cwd(cwd.into());
        }
        let mut capabilities: Capabilities = match (container.init, userns) {
            (true, Some(_)) => SYSTEM_CAPABILITIES.iter().copied().collect(),
            _ => DEFAULT_CAPABILITIES.iter().copied().collect(),
        };
        if container.init {
            // An init system reboots or powers off with reboot(2), which in a pid namespace only
            // ends the namespace: that is how a system container restarts itself.
            capabilities.insert(Capability::SysBoot);
            if !definition.nics.is_empty() {
                // Its own network tools (a DHCP client) configure its nics, which are all its
                // network namespace holds.
                capabilities.insert(Capability::NetAdmin);
                capabilities.insert(Capability::NetRaw);
            }
        }
        let seccomp = match container.seccomp.as_deref() {
            None | Some("default") => Some(crate::seccomp::convert(
                crate::seccomp::DEFAULT_PROFILE,
                "default",
                &capabilities,
                crate::seccomp::native_arch(),
            )?),
            Some("unconfined") => None,
            Some(path) => Some(crate::seccomp::convert_file(
                &paths.resolve(std::path::Path::new(path)),
                &capabilities,
            )?),
        };
        process.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .map_err(invalid)?,
        ));
        if let Some(user) = &container.user {
            // Checked with the rest of the definition.
            let ids: UserIds = user.parse().map_err(CoreError::ContainerUser)?;
            process.set_user(
                UserBuilder::default()
                    .uid(ids.uid)
                    .gid(ids.gid)
                    .build()
                    .map_err(invalid)?,
            );
        }
        spec.set_process(Some(process));

        // The root filesystem is mounted nodev: a device node in the image (or made by a
        // process later) opens nothing. /dev is a tmpfs mounted on top, with its devices.
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        annotations.insert(
            corral_container::spec::ROOTFS_NODEV_ANNOTATION.to_string(),
            "true".to_string(),
        );
        if container.init {
            annotations.insert(
                corral_container::spec::SYSTEMD_CGROUP_ANNOTATION.to_string(),
                "true".to_string(),
            );
        }
        spec.set_annotations(Some(annotations));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        if container.init {
            for (destination, data) in SYSTEM_TMPFS {
                mounts.push(
                    MountBuilder::default()
                        .destination(destination)
                        .typ("tmpfs")
                        .source("tmpfs")
                        .options(
                            ["nosuid", "nodev", data]
                                .into_iter()
                                .map(String::from)
                                .collect::<Vec<_>>(),
                        )
                        .build()
                        .map_err(invalid)?,
                );
            }
        }
        if crate::agent::has_agent_socket(definition) {
            // After the tmpfs /run: the guest agent's socket directory, shared with the host.
            mounts.push(
                MountBuilder::default()
                    .destination(AGENT_DIR_IN_CONTAINER)
                    .typ("bind")
                    .source(crate::agent::container_agent_dir(paths))
                    .options(["rbind", "rprivate", "rw"].map(String::from).to_vec())
                    .build()
                    .map_err(invalid)?,
            );
        }
        for (index, disk) in definition.disks.iter().enumerate() {
            let source = self.disk_source(paths, index, definition)?;
            if disk.format.is_some_and(|f| f != DiskFormat::Dir) || !source.is_dir() {
                return Err(CoreError::Unsupported(format!(
                    "disks[{index}] ({}) is not a directory; containers mount directory volumes",
                    source.display()
                )));
            }
            let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
            options.push(if disk.readonly { "ro" } else { "rw" }.to_string());
            mounts.push(
                MountBuilder::default()
                    .destination(disk.target.clone().unwrap_or_default())
                    .typ("bind")
                    .source(source)
                    .options(options)
                    .build()
                    .map_err(invalid)?,
            );
        }
        if crate::container_net::manages_etc_files(definition) {
            let etc = crate::container_net::etc_dir(paths);
            for name in crate::container_net::ETC_FILES {
                mounts.push(
                    MountBuilder::default()
                        .destination(Path::new("/etc").join(name))
                        .typ("bind")
                        .source(etc.join(name))
                        .options(["rbind", "rprivate", "ro"].map(String::from).to_vec())
                        .build()
                        .map_err(invalid)?,
                );
            }
        }
        spec.set_mounts(Some(mounts));

        let mut resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(definition.memory.0 as i64)
                    .build()
                    .map_err(invalid)?,
            )
            .cpu({
                let mut cpu = LinuxCpuBuilder::default()
                    .quota(i64::from(definition.cpus) * CPU_PERIOD_US as i64)
                    .period(CPU_PERIOD_US);
                if let Some(weight) = definition.limits.cpu_weight {
                    // cgroup v1 shares: weight 100 is the default share of 1024.
                    cpu = cpu.shares(weight * 1024 / 100);
                }
                cpu.build().map_err(invalid)?
            })
            .build()
            .map_err(invalid)?;
        if let Some(pids) = definition.limits.pids {
            resources.set_pids(Some(
                LinuxPidsBuilder::default()
                    .limit(pids as i64)
                    .build()
                    .map_err(invalid)?,
            ));
        }
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(resources));
        linux.set_seccomp(seccomp);
        if let Some(range) = userns {
            let map = |host: u32| {
                LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(host)
                    .size(crate::userns::RANGE)
                    .build()
            };
            linux.set_uid_mappings(Some(vec![map(range.uid).map_err(invalid)?]));
            linux.set_gid_mappings(Some(vec![map(range.gid).map_err(invalid)?]));
            let mut namespaces = linux.namespaces().clone().unwrap_or_default();
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .build()
                    .map_err(invalid)?,
            );
            linux.set_namespaces(Some(namespaces));
        }
        if crate::container_net::attached_by_hook(definition, userns.is_some()) {
            // A new network namespace, owned by the container's user namespace so its init can
            // configure its links; the hook moves the nics in once it exists.
            let hook = HookBuilder::default()
                .path(&self.exe)
                .args(vec![
                    "corral".to_owned(),
                    "network-attach".to_owned(),
                    paths.dir.to_string_lossy().into_owned(),
                ])
                // Hooks get only the environment the spec gives; `ip` and `nft` are on this.
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                ])
                .build()
                .map_err(invalid)?;
            let mut hooks = spec.hooks().clone().unwrap_or_default();
            hooks.set_create_runtime(Some(vec![hook]));
            spec.set_hooks(Some(hooks));
        } else if !definition.nics.is_empty() {
            // The namespace `container_net::set_up` made, with the nics in it.
            let mut namespaces = linux.namespaces().clone().unwrap_or_default();
            namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(crate::container_net::netns_file(paths))
                    .build()
                    .map_err(invalid)?,
            );
            linux.set_namespaces(Some(namespaces));
        }
        linux.set_cgroups_path(Some(crate::driver::instance_cgroup(definition, paths)));
        spec.set_linux(Some(linux));
        Ok(spec)
    }
}

impl ContainerDriver {
    /// For `userns = "auto"`: corral's id range (allocated on first use), with the root
    /// filesystem shifted into it once (`rootfs.userns` in the instance directory records the
    /// range it was shifted to).
    fn prepare_userns(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<Option<IdRange>, CoreError> {
        let Some(container) = &definition.container else {
            return Ok(None);
        };
        if container.userns != Some(UserNs::Auto) {
            return Ok(None);
        }
        let range = crate::userns::ensure_range(Path::new("/etc"))?;
        let marker = paths.dir.join("rootfs.userns");
        let recorded = format!("{}:{}\n", range.uid, range.gid);
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(recorded.as_str()) {
            crate::userns::shift_rootfs(
                &paths.resolve(&container.rootfs),
                range,
                &paths.dir.join("rootfs.userns-modes"),
            )?;
            corral_host::atomic::write_file(&marker, recorded.as_bytes(), PRIVATE_FILE_MODE)?;
        }
        Ok(Some(range))
    }
}

/// The directory of the guest agent's socket in a system container.
const AGENT_DIR_IN_CONTAINER: &str = "/run/corral-agent";

/// Makes the agent's socket directory, private, owned by the container's root (who makes the
/// socket in it), and empty of an earlier run's socket.
fn prepare_agent_dir(paths: &InstancePaths, userns: Option<IdRange>) -> Result<(), CoreError> {
    let dir = crate::agent::container_agent_dir(paths);
    corral_host::atomic::create_private_dir_all(&dir)
        .map_err(CoreError::io("create", dir.clone()))?;
    for entry in std::fs::read_dir(&dir).map_err(CoreError::io("read", dir.clone()))? {
        let path = entry.map_err(CoreError::io("read", dir.clone()))?.path();
        std::fs::remove_file(&path).map_err(CoreError::io("remove", path))?;
    }
    let (uid, gid) = userns.map_or((0, 0), |range| (range.uid, range.gid));
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(CoreError::io("chown", dir))
}

impl Driver for ContainerDriver {
    /// The container's processes outlive a killed monitor: stop them and free their cgroup;
    /// then its nics and network namespace go.
    fn clean_up_lost_run(&self, name: &str, paths: &InstancePaths) {
        if let Ok(container) = corral_container::Container::load(&Self::engine_root(paths), name) {
            if let Err(err) = container.delete(true) {
                tracing::warn!("cannot clean up container {name} after its monitor died: {err}");
            }
        }
        crate::container_net::tear_down(paths);
    }

    fn settle_definition(
        &self,
        definition: &mut Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        crate::seed::check(definition, paths, &self.networks)
    }

    fn check_resources(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<(), CoreError> {
        debug_assert_eq!(definition.kind, Kind::Container);
        let spec = definition.container.as_ref().ok_or_else(|| {
            CoreError::Unsupported(format!(
                "instance {} has no [container] section",
                definition.name
            ))
        })?;
        // A nic that cannot be set up (no bridge, no prefix) is refused at create, not at start.
        crate::container_net::check(definition, &self.networks)?;
        let rootfs = paths.resolve(&spec.rootfs);
        if !rootfs.is_dir() {
            return Err(CoreError::Missing {
                what: "root filesystem",
                path: rootfs,
            });
        }
        for index in 0..definition.disks.len() {
            let source = self.disk_source(paths, index, definition)?;
            if !source.exists() {
                return Err(CoreError::Missing {
                    what: "disk",
                    path: source,
                });
            }
        }
        Ok(())
    }

    fn supervisor_command(
        &self,
        definition: &Definition,
        paths: &InstancePaths,
    ) -> Result<Command, CoreError> {
        let userns = self.prepare_userns(definition, paths)?;
        if crate::agent::has_agent_socket(definition) {
            prepare_agent_dir(paths, userns)?;
        }
        if let Some(container) = &definition.container {
            // After the shift into the user namespace: the seed files take the root's owner.
            let rootfs = paths.resolve(&container.rootfs);
            crate::seed::write_rootfs(definition, paths, &self.networks, &rootfs)?;
        }
        let spec = self.spec(definition, paths, userns)?;
        crate::container_net::set_up(definition, paths, &self.networks, userns.is_some())?;
        let bundle = Self::bundle_dir(paths);
        let json = serde_json::to_vec_pretty(&spec).map_err(|source| CoreError::Encode {
            what: "container spec",
            source,
        })?;
        corral_host::atomic::write_file(&bundle.join("config.json"), &json, PRIVATE_FILE_MODE)?;
        let (program, arguments) = &self.monitor;
        let mut command = Command::new(program);
        command.args(*arguments);
        if let Some(cache) = &self.seccomp_cache {
            command.arg(crate::monitor::SECCOMP_CACHE_OPTION).arg(cache);
        }
        command.arg(&paths.dir);
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ContainerSpec;

    fn spec_of(init: bool, userns: Option<IdRange>) -> Spec {
        let dir = tempfile::tempdir().unwrap();
        let mut definition = Definition::new(
            "box",
            Kind::Container,
            crate::definition::new_uuid().unwrap(),
        );
        let mut container = ContainerSpec::new("rootfs");
        container.init = init;
        definition.container = Some(container);
        let driver = ContainerDriver::new(
            "/bin/corral",
            Pool::default_in(dir.path()),
            crate::networks::networks_in(dir.path()),
        );
        driver
            .spec(&definition, &InstancePaths::new(dir.path()), userns)
            .unwrap()
    }

    fn capabilities(spec: &Spec) -> Capabilities {
        let process = spec.process().as_ref().unwrap();
        process
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
    }

    fn mount_points(spec: &Spec) -> Vec<PathBuf> {
        spec.mounts()
            .iter()
            .flatten()
            .filter(|m| m.typ().as_deref() == Some("tmpfs"))
            .map(|m| m.destination().clone())
            .collect()
    }

    const RANGE: IdRange = IdRange {
        uid: 100_000,
        gid: 100_000,
    };

    #[test]
    fn a_system_container_in_a_user_namespace_gets_what_systemd_needs() {
        let spec = spec_of(true, Some(RANGE));
        let caps = capabilities(&spec);
        for cap in [
            Capability::SysAdmin,
            Capability::SysBoot,
            Capability::NetAdmin,
        ] {
            assert!(caps.contains(&cap), "{cap:?}");
        }
        for cap in [
            Capability::SysModule,
            Capability::SysTime,
            Capability::SysRawio,
        ] {
            assert!(!caps.contains(&cap), "{cap:?} reaches the host");
        }
        let annotations = spec.annotations().clone().unwrap();
        assert_eq!(
            annotations
                .get(corral_container::spec::SYSTEMD_CGROUP_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
        let tmpfs = mount_points(&spec);
        for path in ["/run", "/run/lock", "/tmp"] {
            assert!(tmpfs.contains(&PathBuf::from(path)), "{path} in {tmpfs:?}");
        }
    }

    /// Destinations of the spec's bind mounts, in order, with the position of `/run`'s tmpfs.
    fn agent_mount(spec: &Spec) -> Option<(usize, usize)> {
        let mounts: Vec<_> = spec.mounts().iter().flatten().collect();
        let run = mounts
            .iter()
            .position(|m| m.destination() == Path::new("/run"))?;
        let agent = mounts.iter().position(|m| {
            m.destination() == Path::new(AGENT_DIR_IN_CONTAINER)
                && m.typ().as_deref() == Some("bind")
                && m.source()
                    .as_deref()
                    .is_some_and(|s| s.ends_with("run/agent"))
        })?;
        Some((run, agent))
    }

    #[test]
    fn a_system_container_gets_the_agent_directory_over_its_run_and_an_application_none() {
        let (run, agent) = agent_mount(&spec_of(true, Some(RANGE))).expect("an agent mount");
        assert!(run < agent, "mounted before the tmpfs /run would hide it");
        let application = spec_of(false, None);
        assert!(!application
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.destination() == Path::new(AGENT_DIR_IN_CONTAINER)));
    }

    #[test]
    fn without_a_user_namespace_or_an_init_the_capabilities_stay_podmans() {
        let host_ids = capabilities(&spec_of(true, None));
        assert!(!host_ids.contains(&Capability::SysAdmin));
        assert!(host_ids.contains(&Capability::SysBoot));
        let application = spec_of(false, Some(RANGE));
        assert!(!capabilities(&application).contains(&Capability::SysAdmin));
        assert!(!mount_points(&application).contains(&PathBuf::from("/run")));
        assert!(!application
            .annotations()
            .clone()
            .unwrap()
            .contains_key(corral_container::spec::SYSTEMD_CGROUP_ANNOTATION));
    }

    /// The spec of the container defined by `toml` (after `name`, `type` and `uuid`), built in
    /// instance directory `dir`.
    fn spec_from(toml_text: &str, dir: &Path, userns: Option<IdRange>) -> Spec {
        let text = format!(
            "name = \"box\"\ntype = \"container\"\n\
             uuid = \"0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11\"\n{toml_text}"
        );
        let definition: Definition = toml::from_str(&text).unwrap();
        definition.validate().unwrap();
        let driver = ContainerDriver::new(
            "/bin/corral",
            Pool::default_in(dir),
            crate::networks::networks_in(dir),
        );
        driver
            .spec(&definition, &InstancePaths::new(dir), userns)
            .unwrap()
    }

    #[test]
    fn the_process_gets_the_definitions_command_env_cwd_user_and_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_from(
            "[container]\nrootfs = \"rootfs\"\ncommand = [\"/bin/app\", \"--serve\"]\n\
             env = [\"MODE=test\"]\ncwd = \"/srv\"\nuser = \"1000:1001\"\n\
             hostname = \"api\"\ntty = false\n",
            dir.path(),
            None,
        );
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.args().as_deref(),
            Some(&["/bin/app".to_string(), "--serve".to_string()][..])
        );
        assert_eq!(
            process.env().as_deref(),
            Some(
                &[
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                    "TERM=xterm".to_string(),
                    "MODE=test".to_string(),
                ][..]
            )
        );
        assert_eq!(process.cwd(), Path::new("/srv"));
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 1001));
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("api"));
        let root = spec.root().as_ref().unwrap();
        assert_eq!(
            root.path(),
            &dir.path().join("rootfs"),
            "relative to the instance"
        );
        assert_eq!(
            spec.annotations()
                .as_ref()
                .unwrap()
                .get(corral_container::spec::ROOTFS_NODEV_ANNOTATION)
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn without_a_user_or_hostname_pid_1_is_root_named_after_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_from("[container]\nrootfs = \"/srv/rootfs\"\n", dir.path(), None);
        let process = spec.process().as_ref().unwrap();
        assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/srv/rootfs")
        );
        // A uid alone runs in group 0, as with runc.
        let spec = spec_from(
            "[container]\nrootfs = \"rootfs\"\nuser = \"33\"\n",
            dir.path(),
            None,
        );
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (33, 0));
    }

    #[test]
    fn limits_become_the_cgroup_resources_of_the_instance_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_from(
            "cpus = 3\nmemory = \"256M\"\n[limits]\npids = 100\ncpu_weight = 50\n\
             [container]\nrootfs = \"rootfs\"\n",
            dir.path(),
            None,
        );
        let linux = spec.linux().as_ref().unwrap();
        let resources = linux.resources().as_ref().unwrap();
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(256 << 20)
        );
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(300_000), Some(100_000)));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 100);
        let cgroup = linux.cgroups_path().as_ref().unwrap().display().to_string();
        assert!(
            cgroup.starts_with("/corral-instances/box.0e5c8a52."),
            "{cgroup}"
        );
        let unlimited = spec_from("[container]\nrootfs = \"rootfs\"\n", dir.path(), None);
        let resources = unlimited
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .clone()
            .unwrap();
        assert!(resources.pids().is_none());
        assert_eq!(resources.cpu().as_ref().unwrap().shares(), None);
    }

    #[test]
    fn directory_disks_are_bind_mounted_at_their_target_read_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let spec = spec_from(
            "[container]\nrootfs = \"rootfs\"\n\
             [[disks]]\npath = \"data\"\ntarget = \"/var/data\"\n\
             [[disks]]\npath = \"conf\"\ntarget = \"/etc/app\"\nreadonly = true\n",
            dir.path(),
            None,
        );
        let binds: Vec<(PathBuf, Option<PathBuf>, Vec<String>)> = spec
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .map(|m| {
                (
                    m.destination().clone(),
                    m.source().clone(),
                    m.options().clone().unwrap_or_default(),
                )
            })
            .collect();
        let options = |mode: &str| ["rbind", "rprivate", mode].map(String::from).to_vec();
        assert_eq!(
            binds,
            [
                (
                    "/var/data".into(),
                    Some(dir.path().join("data")),
                    options("rw")
                ),
                (
                    "/etc/app".into(),
                    Some(dir.path().join("conf")),
                    options("ro")
                ),
            ]
        );
    }

    #[test]
    fn a_disk_that_is_not_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.raw"), b"").unwrap();
        let definition: Definition = toml::from_str(
            "name = \"box\"\ntype = \"container\"\n\
             uuid = \"0e5c8a52-3f0b-4b8e-9d55-2f8a7d9b6c11\"\n\
             [container]\nrootfs = \"rootfs\"\n[[disks]]\npath = \"disk.raw\"\n\
             target = \"/data\"\n",
        )
        .unwrap();
        let driver = ContainerDriver::new(
            "/bin/corral",
            Pool::default_in(dir.path()),
            crate::networks::networks_in(dir.path()),
        );
        let err = driver
            .spec(&definition, &InstancePaths::new(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("disks[0] (") && err.ends_with("containers mount directory volumes"),
            "{err}"
        );
    }

    #[test]
    fn a_user_namespace_maps_the_containers_ids_to_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_from(
            "[container]\nrootfs = \"rootfs\"\n",
            dir.path(),
            Some(RANGE),
        );
        let linux = spec.linux().as_ref().unwrap();
        for mappings in [linux.uid_mappings(), linux.gid_mappings()] {
            let mapping = &mappings.as_ref().unwrap()[..];
            assert_eq!(mapping.len(), 1);
            assert_eq!(
                (
                    mapping[0].container_id(),
                    mapping[0].host_id(),
                    mapping[0].size()
                ),
                (0, 100_000, crate::userns::RANGE)
            );
        }
        let namespaces = linux.namespaces().as_ref().unwrap();
        assert!(namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User));
        let host = spec_from("[container]\nrootfs = \"rootfs\"\n", dir.path(), None);
        let linux = host.linux().as_ref().unwrap();
        assert!(linux.uid_mappings().is_none());
        assert!(!linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::User));
    }

    #[test]
    fn nics_join_the_prepared_network_namespace_or_the_hook_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let nic = "[[nics]]\nbridge = \"br0\"\n";
        let application = spec_from(
            &format!("[container]\nrootfs = \"rootfs\"\n{nic}"),
            dir.path(),
            None,
        );
        let network: Vec<_> = application
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .filter(|n| n.typ() == LinuxNamespaceType::Network)
            .map(|n| n.path().clone())
            .collect();
        assert_eq!(
            network,
            [Some(crate::container_net::netns_file(&InstancePaths::new(
                dir.path()
            )))]
        );
        assert!(application.hooks().is_none());
        // Its /etc/hosts, hostname and resolv.conf are corral's.
        let etc: Vec<PathBuf> = application
            .mounts()
            .iter()
            .flatten()
            .filter(|m| m.destination().starts_with("/etc"))
            .map(|m| m.destination().clone())
            .collect();
        assert_eq!(etc.len(), crate::container_net::ETC_FILES.len(), "{etc:?}");

        let system = spec_from(
            &format!("[container]\nrootfs = \"rootfs\"\ninit = true\n{nic}"),
            dir.path(),
            Some(RANGE),
        );
        let hook = &system
            .hooks()
            .as_ref()
            .unwrap()
            .create_runtime()
            .clone()
            .unwrap()[0];
        assert_eq!(hook.path(), Path::new("/bin/corral"));
        assert_eq!(
            hook.args().as_deref().unwrap()[1..],
            [
                "network-attach".to_string(),
                dir.path().display().to_string()
            ]
        );
    }
}
