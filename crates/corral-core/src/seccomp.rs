//! The seccomp profile of instance containers: podman's default (containers/common's
//! `seccomp.json`, carried in `data/`) or a profile file in the same format, converted to an OCI
//! `linux.seccomp` the way podman converts it: entries whose `includes` name capabilities the
//! container lacks or other architectures are left out, as are entries whose `excludes` match.

use std::path::Path;

use oci_spec::runtime::{Capabilities, LinuxSeccomp};
use serde::Deserialize;

use crate::error::CoreError;

/// containers/common's default profile (Apache-2.0; see `data/README.md`).
pub const DEFAULT_PROFILE: &str = include_str!("../data/seccomp-containers-common.json");

/// A profile in the Docker/containers-common format.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    /// Already in the OCI form (index, value, valueTwo, op).
    #[serde(default)]
    args: Option<serde_json::Value>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    /// Go architecture names (`amd64`, `arm64`, ...).
    #[serde(default)]
    arches: Vec<String>,
}

/// The running architecture: (Go name used by `includes`/`excludes`, libseccomp name).
pub fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        other => (other, ""),
    }
}

/// Converts `text` (a containers-common profile) for a container holding `capabilities` on the
/// architecture `arch` (as [`native_arch`] returns it). `origin` names the profile in errors.
pub fn convert(
    text: &str,
    origin: &str,
    capabilities: &Capabilities,
    arch: (&str, &str),
) -> Result<LinuxSeccomp, CoreError> {
    let not_json = |source| CoreError::SeccompProfile {
        origin: origin.to_owned(),
        source,
    };
    let profile: Profile = serde_json::from_str(text).map_err(not_json)?;
    let held: Vec<String> = capabilities
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok()?.as_str().map(str::to_owned))
        .collect();
    let has = |cap: &String| held.contains(cap);
    let (go_arch, scmp_arch) = arch;
    let architectures: Vec<&String> = profile
        .arch_map
        .iter()
        .filter(|m| m.architecture == scmp_arch)
        .flat_map(|m| std::iter::once(&m.architecture).chain(&m.sub_architectures))
        .collect();
    let syscalls: Vec<serde_json::Value> = profile
        .syscalls
        .iter()
        .filter(|s| {
            let arch_in = |f: &Filter| f.arches.iter().any(|a| a == go_arch);
            !arch_in(&s.excludes)
                && !s.excludes.caps.iter().any(has)
                && (s.includes.arches.is_empty() || arch_in(&s.includes))
                && s.includes.caps.iter().all(has)
        })
        .map(|s| {
            let mut entry = serde_json::json!({"names": s.names, "action": s.action});
            if let Some(errno) = s.errno_ret {
                entry["errnoRet"] = errno.into();
            }
            if let Some(args) = s.args.as_ref().filter(|a| !a.is_null()) {
                entry["args"] = args.clone();
            }
            entry
        })
        .collect();
    let mut oci = serde_json::json!({
        "defaultAction": profile.default_action,
        "architectures": architectures,
        "syscalls": syscalls,
    });
    if let Some(errno) = profile.default_errno_ret {
        oci["defaultErrnoRet"] = errno.into();
    }
    serde_json::from_value(oci).map_err(not_json)
}

/// Reads a profile file and converts it; see [`convert`].
pub fn convert_file(path: &Path, capabilities: &Capabilities) -> Result<LinuxSeccomp, CoreError> {
    let text = std::fs::read_to_string(path).map_err(CoreError::io("read", path))?;
    convert(
        &text,
        &path.display().to_string(),
        capabilities,
        native_arch(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Capability, LinuxSeccompAction};

    fn names(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn default_for(caps: &[Capability], arch: (&str, &str)) -> LinuxSeccomp {
        let caps: Capabilities = caps.iter().copied().collect();
        convert(DEFAULT_PROFILE, "default", &caps, arch).unwrap()
    }

    #[test]
    fn the_default_profile_denies_unknown_calls_and_keeps_its_architectures() {
        let profile = default_for(&[], ("amd64", "SCMP_ARCH_X86_64"));
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(38), "ENOSYS");
        let arches = serde_json::to_value(profile.architectures()).unwrap();
        assert_eq!(
            arches,
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        let allowed = names(&profile);
        assert!(allowed.contains(&"read".to_owned()));
        assert!(
            allowed.contains(&"arch_prctl".to_owned()),
            "an amd64-only call"
        );
        assert!(!allowed.contains(&"s390_runtime_instr".to_owned()));
        assert!(!allowed.contains(&"add_key".to_owned()));
    }

    #[test]
    fn capability_groups_follow_the_containers_capabilities() {
        let amd64 = ("amd64", "SCMP_ARCH_X86_64");
        let plain = default_for(&[Capability::Chown], amd64);
        let kcmp_denied = plain.syscalls().iter().flatten().any(|s| {
            s.names().contains(&"kcmp".to_owned())
                && s.action() == LinuxSeccompAction::ScmpActErrno
                && s.errno_ret() == Some(1)
        });
        assert!(kcmp_denied, "without CAP_SYS_PTRACE kcmp fails with EPERM");
        assert!(!names(&plain).contains(&"kcmp".to_owned()));
        let ptrace = default_for(&[Capability::SysPtrace], amd64);
        assert!(names(&ptrace).contains(&"kcmp".to_owned()));
        assert!(!ptrace
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.names().contains(&"kcmp".to_owned())
                && s.action() == LinuxSeccompAction::ScmpActErrno));
        let admin = default_for(&[Capability::SysAdmin], amd64);
        assert!(names(&admin).contains(&"setns".to_owned()));
    }

    #[test]
    fn other_architectures_get_their_own_calls() {
        let arm = default_for(&[], ("arm64", "SCMP_ARCH_AARCH64"));
        assert!(names(&arm).contains(&"set_tls".to_owned()));
        assert!(!names(&arm).contains(&"arch_prctl".to_owned()));
        let arches = serde_json::to_value(arm.architectures()).unwrap();
        assert_eq!(
            arches,
            serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        );
    }

    #[test]
    fn a_bad_profile_is_named() {
        let err = convert("{", "p.json", &Capabilities::new(), native_arch()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("seccomp profile p.json is not usable"),
            "{err}"
        );
        let unknown = r#"{"defaultAction": "SCMP_ACT_BOGUS"}"#;
        assert!(convert(unknown, "p.json", &Capabilities::new(), native_arch()).is_err());
    }
}
