//! Loading and checking a bundle's `config.json`, and translating it into what the engine does:
//! which namespaces to create or join, the environment of the container's process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Process, Spec};

use crate::error::{ConfigError, Error, Result};

/// PATH for processes whose spec sets none, the same default runc and crun use.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The annotation that mounts the rootfs `nodev` when `"true"`: a device node in the image, or
/// made in it later, opens nothing (`/dev`, a mount of its own, keeps working). The runtime
/// spec's `root` takes no mount options, so this is corral's extension; corral's instance
/// containers set it.
pub const ROOTFS_NODEV_ANNOTATION: &str = "org.corral.rootfs.nodev";

/// The annotation that gives an init system its cgroup subtree when `"true"`: the `name=systemd`
/// hierarchy (cgroup v1) or the cgroup2 mount is writable inside the container and the
/// container's cgroup directory there is handed to its root (delegated, as LXC and podman's
/// `--systemd` do), so systemd can make its own cgroups. The resource controllers of cgroup v1
/// stay read-only: the container cannot lift its own limits. corral's system containers set it.
pub const SYSTEMD_CGROUP_ANNOTATION: &str = "org.corral.cgroup.systemd";

/// Namespace names the runtime spec defines.
const KNOWN_NAMESPACES: [&str; 8] = [
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
];

/// A bundle: its directory, its parsed spec and the absolute rootfs path.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub path: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Reads `<bundle>/config.json`, checks it and resolves the rootfs.
    pub fn load(bundle: &Path) -> Result<Bundle> {
        let path = std::fs::canonicalize(bundle).map_err(|e| Error::Config {
            path: bundle.join("config.json"),
            source: ConfigError::Bundle(e),
        })?;
        let config = path.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| Error::Config {
            path: config.clone(),
            source: ConfigError::Read(e),
        })?;
        let spec = parse_spec(&text).map_err(|source| Error::Config {
            path: config.clone(),
            source,
        })?;
        validate(&spec)?;
        let root = spec.root().as_ref().ok_or_else(|| {
            Error::InvalidSpec("root is missing: set root.path to the rootfs directory".into())
        })?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            path.join(root.path())
        };
        // A canonical path: mount(2) rejects some spellings ("bundle/.") as bind targets.
        let rootfs = std::fs::canonicalize(&rootfs).unwrap_or(rootfs);
        if !rootfs.is_dir() {
            return Err(Error::InvalidSpec(format!(
                "rootfs {} is not a directory; unpack the image there or fix root.path",
                rootfs.display()
            )));
        }
        Ok(Bundle { path, spec, rootfs })
    }
}

/// Parses config.json text, giving namespace typos a clearer message than serde's.
pub fn parse_spec(text: &str) -> std::result::Result<Spec, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
    if let Some(namespaces) = value
        .pointer("/linux/namespaces")
        .and_then(|n| n.as_array())
    {
        for namespace in namespaces {
            let kind = namespace.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if !KNOWN_NAMESPACES.contains(&kind) {
                return Err(ConfigError::UnknownNamespace {
                    kind: kind.to_owned(),
                    known: KNOWN_NAMESPACES.join(", "),
                });
            }
        }
    }
    serde_json::from_value(value).map_err(ConfigError::Schema)
}

/// Checks what serde cannot: versions, required parts, duplicates.
pub fn validate(spec: &Spec) -> Result<()> {
    if !spec.version().starts_with("1.") {
        return Err(Error::InvalidSpec(format!(
            "ociVersion {:?} is not supported; corral runs 1.x specs",
            spec.version()
        )));
    }
    // A spec without a process may be created; `start` then fails, as the runtime spec says.
    if let Some(process) = spec.process() {
        validate_process(process)?;
    }
    let mut seen = HashSet::new();
    for namespace in namespaces(spec) {
        if !seen.insert(namespace.typ()) {
            return Err(Error::InvalidSpec(format!(
                "namespace {} is listed twice in linux.namespaces",
                namespace_name(namespace.typ())
            )));
        }
    }
    if spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
        && !namespaces(spec)
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Uts)
    {
        return Err(Error::InvalidSpec(
            "hostname is set but the container shares the host's uts namespace; add a uts namespace".into(),
        ));
    }
    let has_mappings = spec
        .linux()
        .as_ref()
        .is_some_and(|l| l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()));
    if has_new_namespace(spec, LinuxNamespaceType::User) && !has_mappings {
        return Err(Error::InvalidSpec(
            "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
        ));
    }
    rootfs_flags(spec)?;
    delegates_systemd_cgroup(spec)?;
    validate_sysctls(spec)
}

/// The mount flags the spec's annotations add to the rootfs's bind mount.
pub fn rootfs_flags(spec: &Spec) -> Result<MsFlags> {
    Ok(if flag_annotation(spec, ROOTFS_NODEV_ANNOTATION)? {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    })
}

/// True when the spec asks for a delegated systemd cgroup ([`SYSTEMD_CGROUP_ANNOTATION`]).
pub fn delegates_systemd_cgroup(spec: &Spec) -> Result<bool> {
    flag_annotation(spec, SYSTEMD_CGROUP_ANNOTATION)
}

/// An annotation that is `"true"` or `"false"` (the default, when absent).
fn flag_annotation(spec: &Spec, name: &str) -> Result<bool> {
    let value = spec.annotations().as_ref().and_then(|a| a.get(name));
    match value.map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Error::InvalidSpec(format!(
            "annotation {name} is {other:?}; use \"true\" or \"false\""
        ))),
    }
}

/// The IPC sysctls the kernel keeps per ipc namespace (runc's list; `fs.mqueue.*` too).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Accepts only sysctls the kernel keeps per namespace, and only when the container has that
/// namespace to itself: anything else (`kernel.core_pattern`, `vm.*`, `net.*` in the host's
/// network namespace) would be written for the whole host.
pub fn validate_sysctls(spec: &Spec) -> Result<()> {
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref());
    for key in sysctls.into_iter().flat_map(|s| s.keys()) {
        let namespace = if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            LinuxNamespaceType::Ipc
        } else if key.starts_with("net.") {
            LinuxNamespaceType::Network
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            LinuxNamespaceType::Uts
        } else {
            return Err(Error::InvalidSpec(format!(
                "sysctl {key} is not namespaced: setting it in a container would change it for \
                 the whole host; remove it from linux.sysctl"
            )));
        };
        if !has_own_namespace(spec, namespace) {
            let name = match namespace {
                LinuxNamespaceType::Network => "network",
                LinuxNamespaceType::Ipc => "ipc",
                _ => "uts",
            };
            return Err(Error::InvalidSpec(format!(
                "sysctl {key} needs the container's own {name} namespace, or it would change \
                 the host's: add {{\"type\": \"{name}\"}} to linux.namespaces"
            )));
        }
    }
    Ok(())
}

/// True when the container gets a namespace of this kind that is not the runtime's own: a new
/// one, or one joined by a path that names another namespace.
fn has_own_namespace(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespaces(spec)
        .iter()
        .filter(|n| n.typ() == kind)
        .any(|n| match n.path() {
            None => true,
            Some(path) => {
                let ours = Path::new("/proc/self/ns").join(namespace_name(kind));
                match (std::fs::metadata(path), std::fs::metadata(ours)) {
                    (Ok(theirs), Ok(ours)) => {
                        use std::os::unix::fs::MetadataExt;
                        (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino())
                    }
                    // An unusable path fails later, when the init joins it.
                    _ => true,
                }
            }
        })
}

/// Checks a process description (also used for `exec --process`).
pub fn validate_process(process: &Process) -> Result<()> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::InvalidSpec(
            "process.args is empty: name the program to run".into(),
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "process.cwd {} must be an absolute path",
            process.cwd().display()
        )));
    }
    for entry in process.env().iter().flatten() {
        if !entry.contains('=') {
            return Err(Error::InvalidSpec(format!(
                "environment entry {entry:?} has no '=': write NAME=value"
            )));
        }
    }
    Ok(())
}

/// The spec's namespace list (empty when it has none).
pub fn namespaces(spec: &Spec) -> &[LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default()
}

/// True when the spec asks for a new namespace of this type (listed without a path).
pub fn has_new_namespace(spec: &Spec, kind: LinuxNamespaceType) -> bool {
    namespaces(spec)
        .iter()
        .any(|n| n.typ() == kind && n.path().is_none())
}

/// The name `/proc/PID/ns/` uses for a namespace type.
pub fn namespace_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// The clone flag for a namespace type.
pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME shares its value with CSIGNAL's range in clone(2); time namespaces are
        // entered with unshare instead, so clone never sees this.
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// What to do with namespaces: create some in the first clone, join others by path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePlan {
    /// Flags for the clone that starts the container's init.
    pub clone_flags: CloneFlags,
    /// A time namespace to create with unshare (clone cannot, see [`clone_flag`]).
    pub new_time: bool,
    /// Namespaces to join, in the order they must be joined (user first).
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> NamespacePlan {
        let mut plan = NamespacePlan {
            clone_flags: CloneFlags::empty(),
            new_time: false,
            join: Vec::new(),
        };
        for namespace in namespaces(spec) {
            match namespace.path() {
                None if namespace.typ() == LinuxNamespaceType::Time => plan.new_time = true,
                None => plan.clone_flags |= clone_flag(namespace.typ()),
                Some(path) => plan.join.push((namespace.typ(), path.clone())),
            }
        }
        // Joining a user namespace first gives the privileges needed to join the others.
        plan.join
            .sort_by_key(|(kind, _)| *kind != LinuxNamespaceType::User);
        plan
    }

    pub fn creates(&self, flag: CloneFlags) -> bool {
        self.clone_flags.contains(flag)
    }

    /// Namespaces the runtime joins before the clone, for the init to inherit: a pid namespace
    /// (only children enter it), and a network namespace, which the host made and owns: once
    /// root of a new user namespace, the init could no longer join it.
    pub fn joined_before_clone(&self) -> impl Iterator<Item = (LinuxNamespaceType, &Path)> {
        self.join
            .iter()
            .filter(|(kind, _)| joined_by_runtime(*kind))
            .map(|(kind, path)| (*kind, path.as_path()))
    }
}

/// Whether a namespace given by path is joined by the runtime (see
/// [`NamespacePlan::joined_before_clone`]) rather than by the init.
pub fn joined_by_runtime(kind: LinuxNamespaceType) -> bool {
    matches!(kind, LinuxNamespaceType::Pid | LinuxNamespaceType::Network)
}

/// The environment of a container process: the spec's, with `container=corral` (replacing any
/// other runtime's value), and PATH and HOME filled in when missing.
pub fn process_env(process: &Process, home: Option<&str>) -> Vec<String> {
    let mut env: Vec<String> = process
        .env()
        .iter()
        .flatten()
        .filter(|entry| !entry.starts_with("container="))
        .cloned()
        .collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home.unwrap_or("/")));
    }
    // `corral guest detect` (and systemd) recognise the runtime by `container=`.
    env.push(format!(
        "container={}",
        corral_host::detect::CORRAL_CONTAINER_ID
    ));
    env
}

/// The home directory of `uid` in an `/etc/passwd` text.
pub fn home_from_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin", "container=podman"]},
        "root": {"path": "rootfs"},
        "hostname": "box",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                                 {"type": "network", "path": "/run/netns/x"}, {"type": "user", "path": "/proc/1/ns/user"}]}
    }"#;

    fn spec(text: &str) -> Spec {
        parse_spec(text).unwrap()
    }

    /// A spec with these namespaces (`"net"` may carry a path) and one sysctl.
    fn with_sysctl(namespaces: &str, key: &str) -> Spec {
        spec(&format!(
            r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}},
                "linux": {{"namespaces": [{namespaces}], "sysctl": {{"{key}": "1"}}}}}}"#
        ))
    }

    #[test]
    fn the_nodev_annotation_adds_nodev_to_the_rootfs_and_odd_values_are_refused() {
        let annotated = |value: &str| {
            spec(&format!(
                r#"{{"ociVersion": "1.0.2", "root": {{"path": "rootfs"}},
                    "annotations": {{"{ROOTFS_NODEV_ANNOTATION}": "{value}"}}}}"#
            ))
        };
        assert_eq!(rootfs_flags(&spec(MINIMAL)).unwrap(), MsFlags::empty());
        assert_eq!(rootfs_flags(&annotated("true")).unwrap(), MsFlags::MS_NODEV);
        assert_eq!(rootfs_flags(&annotated("false")).unwrap(), MsFlags::empty());
        let err = validate(&annotated("yes")).unwrap_err().to_string();
        assert!(err.contains(ROOTFS_NODEV_ANNOTATION), "{err}");
    }

    #[test]
    fn sysctls_outside_every_namespace_are_refused() {
        for key in [
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "kernel.panic",
            "fs.file-max",
        ] {
            let spec = with_sysctl(
                r#"{"type": "ipc"}, {"type": "network"}, {"type": "uts"}"#,
                key,
            );
            let err = validate_sysctls(&spec).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("not namespaced"), "{err}");
        }
    }

    #[test]
    fn namespaced_sysctls_need_their_namespace_of_the_containers_own() {
        let accepted = [
            (r#"{"type": "ipc"}"#, "kernel.shmmax"),
            (r#"{"type": "ipc"}"#, "fs.mqueue.msg_max"),
            (r#"{"type": "network"}"#, "net.ipv4.ip_forward"),
            (
                r#"{"type": "network", "path": "/run/netns/other"}"#,
                "net.core.somaxconn",
            ),
            (r#"{"type": "uts"}"#, "kernel.domainname"),
            (r#"{"type": "uts"}"#, "kernel.hostname"),
        ];
        for (namespaces, key) in accepted {
            validate_sysctls(&with_sysctl(namespaces, key)).unwrap();
        }
        let refused = [
            ("", "kernel.shmmax", "ipc"),
            (r#"{"type": "network"}"#, "fs.mqueue.queues_max", "ipc"),
            (r#"{"type": "ipc"}"#, "net.ipv4.ip_forward", "network"),
            // Joining the runtime's own network namespace is the host's.
            (
                r#"{"type": "network", "path": "/proc/self/ns/net"}"#,
                "net.ipv4.ip_forward",
                "network",
            ),
            ("", "kernel.domainname", "uts"),
        ];
        for (namespaces, key, kind) in refused {
            let err = validate_sysctls(&with_sysctl(namespaces, key))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(&format!("own {kind} namespace")),
                "{err}"
            );
        }
    }

    #[test]
    fn namespaces_are_created_in_the_clone_or_joined_user_first() {
        let plan = NamespacePlan::from_spec(&spec(MINIMAL));
        assert_eq!(
            plan.clone_flags,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS
        );
        assert_eq!(plan.join[0].0, LinuxNamespaceType::User);
        assert_eq!(
            plan.join[1],
            (LinuxNamespaceType::Network, PathBuf::from("/run/netns/x"))
        );
        // The host's network namespace is entered by the runtime, before the user namespace.
        assert_eq!(
            plan.joined_before_clone().collect::<Vec<_>>(),
            [(LinuxNamespaceType::Network, Path::new("/run/netns/x"))]
        );
    }

    #[test]
    fn a_valid_spec_passes() {
        validate(&spec(MINIMAL)).unwrap();
    }

    #[test]
    fn unknown_namespace_type_is_named() {
        let text = MINIMAL.replace(r#"{"type": "uts"}"#, r#"{"type": "utz"}"#);
        let err = parse_spec(&text).unwrap_err();
        assert!(
            err.to_string().contains("unknown namespace type \"utz\""),
            "{err}"
        );
    }

    #[test]
    fn duplicate_namespaces_are_rejected() {
        let text = MINIMAL.replace(r#"{"type": "uts"}"#, r#"{"type": "pid"}, {"type": "uts"}"#);
        let err = validate(&spec(&text)).unwrap_err();
        assert!(
            err.to_string().contains("namespace pid is listed twice"),
            "{err}"
        );
    }

    #[test]
    fn hostname_without_uts_namespace_is_rejected() {
        let text = MINIMAL.replace(r#"{"type": "uts"},"#, "");
        let err = validate(&spec(&text)).unwrap_err();
        assert!(err.to_string().contains("uts namespace"), "{err}");
    }

    #[test]
    fn an_unloadable_config_names_the_file_and_keeps_each_cause_once() {
        let bundle = tempfile::tempdir().unwrap();
        let config = bundle.path().join("config.json");
        let err = Bundle::load(bundle.path()).unwrap_err();
        assert!(
            matches!(&err, Error::Config { path, source: ConfigError::Read(_) } if *path == config),
            "{err:?}"
        );
        std::fs::write(&config, "{ \"ociVersion\": ").unwrap();
        let err = Bundle::load(bundle.path()).unwrap_err();
        let Error::Config {
            source: ConfigError::Json(json),
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        let chain = corral_host::error_chain(&err);
        assert_eq!(
            chain,
            format!(
                "cannot load the container config {}: not valid JSON: {json}",
                config.display()
            )
        );
    }

    #[test]
    fn malformed_json_is_clear_and_a_missing_process_waits_for_start() {
        let err = parse_spec("{ not json").unwrap_err();
        assert!(matches!(err, ConfigError::Json(_)), "{err}");
        assert_eq!(err.to_string(), "not valid JSON");
        validate(&spec(r#"{"ociVersion": "1.0.2", "root": {"path": "r"}}"#))
            .expect("a spec without a process can be created; start fails later");
        let text = MINIMAL.replace(r#""args": ["sh"]"#, r#""args": []"#);
        assert!(validate(&spec(&text))
            .unwrap_err()
            .to_string()
            .contains("args is empty"));
        let text = MINIMAL.replace("1.0.2", "0.9");
        assert!(validate(&spec(&text))
            .unwrap_err()
            .to_string()
            .contains("ociVersion"));
    }

    #[test]
    fn new_user_namespace_needs_mappings() {
        let text = MINIMAL.replace(
            r#"{"type": "user", "path": "/proc/1/ns/user"}"#,
            r#"{"type": "user"}"#,
        );
        let err = validate(&spec(&text)).unwrap_err();
        assert!(err.to_string().contains("uidMappings"), "{err}");
    }

    #[test]
    fn container_env_replaces_other_runtimes_and_fills_defaults() {
        let spec = spec(MINIMAL);
        let env = process_env(spec.process().as_ref().unwrap(), Some("/root"));
        assert_eq!(env, ["PATH=/bin", "HOME=/root", "container=corral"]);
    }

    #[test]
    fn home_is_looked_up_by_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n";
        assert_eq!(home_from_passwd(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_from_passwd(passwd, 7), None);
    }
}
