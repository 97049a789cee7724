//! The last steps before exec: rlimits, user and groups, capabilities, no_new_privs, umask,
//! seccomp. Order matters: the bounding set is trimmed while CAP_SETPCAP is still held, the ids
//! change with keep-caps set so the spec's capabilities survive, seccomp goes last.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability as HostCap};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimit, PosixRlimitType, Process};

use crate::error::{Error, Result};

/// The umask of container processes whose spec sets none (runc's default).
const DEFAULT_UMASK: u32 = 0o022;

/// Sets the spec's resource limits on the calling process.
pub fn apply_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for limit in rlimits {
        setrlimit(rlimit_resource(limit.typ()), limit.soft(), limit.hard()).map_err(|e| {
            Error::sys(
                format!(
                    "set {:?} to soft {} hard {}",
                    limit.typ(),
                    limit.soft(),
                    limit.hard()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

fn rlimit_resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Maps the spec's capability names to the host's; names this host's table lacks are skipped.
pub fn host_caps(spec: Option<&Capabilities>) -> HashSet<HostCap> {
    spec.into_iter()
        .flatten()
        .filter_map(|cap| {
            let name = format!("CAP_{cap}");
            let parsed = HostCap::from_str(&name).ok();
            if parsed.is_none() {
                tracing::debug!("capability {name} is unknown to this build; skipped");
            }
            parsed
        })
        .collect()
}

/// Becomes the spec's user with the spec's capabilities and umask.
pub fn become_process_identity(process: &Process) -> Result<()> {
    let capabilities = process.capabilities().as_ref();
    let bounding = host_caps(capabilities.and_then(|c| c.bounding().as_ref()));
    if capabilities.is_some() {
        for cap in caps::all() {
            if !bounding.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| Error::Capabilities {
                    what: format!("drop {cap} from the bounding set"),
                    source,
                })?;
            }
        }
    }

    let user = process.user();
    prctl_keep_caps(true)?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|&g| Gid::from_raw(g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| Error::sys("set supplementary groups", e))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| Error::sys(format!("set gid {gid}"), e))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| Error::sys(format!("set uid {uid}"), e))?;
    prctl_keep_caps(false)?;

    if let Some(capabilities) = capabilities {
        // Capabilities the runtime itself lacks (a restricted host bounding set) cannot be given;
        // asking the kernel for them would fail the whole container.
        let held = caps::read(None, CapSet::Permitted).unwrap_or_default();
        let host_caps = |set: Option<&Capabilities>| -> HashSet<HostCap> {
            host_caps(set).intersection(&held).copied().collect()
        };
        let cap_error = |set: &'static str| {
            move |source: caps::errors::CapsError| Error::Capabilities {
                what: format!("set {set} capabilities"),
                source,
            }
        };
        let permitted = host_caps(capabilities.permitted().as_ref());
        let effective = host_caps(capabilities.effective().as_ref());
        // The kernel refuses inheritable capabilities outside the bounding set.
        let inheritable: HashSet<_> = host_caps(capabilities.inheritable().as_ref())
            .intersection(&bounding)
            .copied()
            .collect();
        // Inheritable first, while the permitted set is still whole; effective must stay a subset
        // of permitted at every step.
        caps::set(None, CapSet::Inheritable, &inheritable).map_err(cap_error("inheritable"))?;
        let effective_now: HashSet<_> = effective.intersection(&permitted).copied().collect();
        caps::set(None, CapSet::Effective, &effective_now).map_err(cap_error("effective"))?;
        caps::set(None, CapSet::Permitted, &permitted).map_err(cap_error("permitted"))?;
        let ambient = host_caps(capabilities.ambient().as_ref());
        for cap in ambient {
            // Ambient capabilities must be permitted and inheritable; others are skipped.
            if permitted.contains(&cap) && inheritable.contains(&cap) {
                caps::raise(None, CapSet::Ambient, cap).map_err(cap_error("ambient"))?;
            }
        }
    }

    nix::sys::stat::umask(Mode::from_bits_truncate(
        user.umask().unwrap_or(DEFAULT_UMASK),
    ));
    Ok(())
}

/// Sets no_new_privs: from here on exec cannot gain privileges (setuid bits, file caps).
pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| Error::sys("set no_new_privs", e))
}

fn prctl_keep_caps(keep: bool) -> Result<()> {
    nix::sys::prctl::set_keepcaps(keep).map_err(|e| Error::sys("set keep-caps", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    #[test]
    fn spec_capability_names_map_to_host_capabilities() {
        let spec: Capabilities = [
            Capability::Chown,
            Capability::NetBindService,
            Capability::SysAdmin,
        ]
        .into_iter()
        .collect();
        let host = host_caps(Some(&spec));
        assert_eq!(
            host,
            HashSet::from([
                HostCap::CAP_CHOWN,
                HostCap::CAP_NET_BIND_SERVICE,
                HostCap::CAP_SYS_ADMIN
            ])
        );
        assert!(host_caps(None).is_empty());
    }

    #[test]
    fn every_rlimit_type_maps_to_a_distinct_resource() {
        let kinds = [
            PosixRlimitType::RlimitCpu,
            PosixRlimitType::RlimitFsize,
            PosixRlimitType::RlimitData,
            PosixRlimitType::RlimitStack,
            PosixRlimitType::RlimitCore,
            PosixRlimitType::RlimitRss,
            PosixRlimitType::RlimitNproc,
            PosixRlimitType::RlimitNofile,
            PosixRlimitType::RlimitMemlock,
            PosixRlimitType::RlimitAs,
            PosixRlimitType::RlimitLocks,
            PosixRlimitType::RlimitSigpending,
            PosixRlimitType::RlimitMsgqueue,
            PosixRlimitType::RlimitNice,
            PosixRlimitType::RlimitRtprio,
            PosixRlimitType::RlimitRttime,
        ];
        let resources: HashSet<_> = kinds.into_iter().map(rlimit_resource).collect();
        assert_eq!(resources.len(), kinds.len());
    }
}
