//! A spec's seccomp profile compiled to classic BPF with libseccomp (which knows every
//! architecture's syscall numbers, so profiles such as podman's default load as written).

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::memfd::{memfd_create, MFdFlags};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};

use crate::error::{Error, Result};

/// The errno a filter returns when the spec asks for SCMP_ACT_ERRNO without a value.
const DEFAULT_ERRNO: i32 = libc::EPERM;

fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(
            errno_ret.map_or(DEFAULT_ERRNO, |e| i32::try_from(e).unwrap_or(DEFAULT_ERRNO)),
        ),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno_ret.map_or(libc::EPERM as u16, |e| {
                u16::try_from(e).unwrap_or(libc::EPERM as u16)
            }))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY needs a listener, which corral does not provide yet".into(),
            ))
        }
    })
}

/// The libseccomp comparison for one spec argument condition: (operator, datum).
fn condition(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = u32::try_from(arg.index()).unwrap_or(u32::MAX);
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // The spec's value is the mask and valueTwo the expected result.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

fn seccomp_err(what: impl Into<String>) -> impl Fn(libseccomp::error::SeccompError) -> Error {
    let what = what.into();
    move |source| Error::SeccompFilter {
        what: what.clone(),
        source,
    }
}

/// The profile compiled: its BPF instructions as the kernel takes them (8 bytes each, in this
/// machine's byte order).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>> {
    let filter = build_filter(profile)?;
    let memfd = memfd_create("corral-seccomp", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| Error::sys("create a memfd for the seccomp filter", e))?;
    filter
        .export_bpf(&memfd)
        .map_err(seccomp_err("export the filter"))?;
    let mut file = std::fs::File::from(memfd);
    let mut program = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|e| Error::io("read", "the exported seccomp filter", e))?;
    Ok(program)
}

/// The profile as a libseccomp filter.
fn build_filter(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(seccomp_err("create the filter"))?;
    for arch in profile.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let arch =
            ScmpArch::from_str(&name).map_err(seccomp_err(format!("read architecture {name}")))?;
        filter
            .add_arch(arch)
            .map_err(seccomp_err(format!("add architecture {name}")))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default {
            // libseccomp refuses rules that repeat the default action.
            continue;
        }
        let args = rule.args().as_deref().unwrap_or_default();
        let conditions: Vec<ScmpArgCompare> = args.iter().map(condition).collect();
        // Conditions on different arguments must all hold (one rule); several conditions on the
        // same argument mean any of them (one rule each), as runc reads profiles.
        let mut indexes = HashSet::new();
        let same_index_repeats = args.iter().any(|a| !indexes.insert(a.index()));
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                // Profiles list syscalls newer or older than this kernel's table; runc skips them.
                tracing::debug!("seccomp: syscall {name} is unknown here; rule skipped");
                continue;
            };
            let add = |filter: &mut ScmpFilterContext, conds: &[ScmpArgCompare]| {
                filter
                    .add_rule_conditional(rule_action, syscall, conds)
                    .map(drop)
                    .map_err(seccomp_err(format!("add the rule for {name}")))
            };
            if same_index_repeats {
                for condition in &conditions {
                    add(&mut filter, std::slice::from_ref(condition))?;
                }
            } else {
                add(&mut filter, &conditions)?;
            }
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_podman_style_profile_compiles() {
        let profile = profile(
            r#"{
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "execve", "exit_group", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]}"#,
        );
        let program = compile(&profile).unwrap();
        assert!(
            program.len() > 8 * 10 && program.len().is_multiple_of(8),
            "the filter should hold real instructions, has {} bytes",
            program.len()
        );
    }

    #[test]
    fn notify_without_listener_is_refused_clearly() {
        let err = compile(&profile(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#)).unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
