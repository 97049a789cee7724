//! Device access rules: the spec's `linux.resources.devices` list read the way the v1 device
//! controller reads it, and the eBPF program that enforces the same list on cgroup v2, which has
//! no device controller (runc's and crun's approach).
//!
//! The list always starts from deny-all, whatever the spec says first: a spec without a
//! "deny all" rule must not leave the host's devices open. Each later rule overrides earlier
//! ones for the access kinds it names (read, write, mknod); type `a` matches both block and
//! character devices, a missing major or minor matches any. A request for several kinds at once
//! (an `O_RDWR` open) is allowed only when every kind is.

use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use rbpf::ebpf::{self, Insn};

use crate::error::{Error, Result};

/// `BPF_DEVCG_DEV_*`: the device type in the low 16 bits of the program's `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Access kinds, as the kernel encodes them (`BPF_DEVCG_ACC_*`) in the high 16 bits.
const ACCESS_MKNOD: u8 = 1;
const ACCESS_READ: u8 = 2;
const ACCESS_WRITE: u8 = 4;
const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// Block or character device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Block,
    Char,
}

impl DeviceKind {
    fn bpf_type(self) -> i32 {
        match self {
            DeviceKind::Block => DEV_BLOCK,
            DeviceKind::Char => DEV_CHAR,
        }
    }
}

/// One checked rule of the spec's device list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    allow: bool,
    /// `None` matches both kinds (type `a`).
    kind: Option<DeviceKind>,
    /// `None` matches any number (`*`).
    major: Option<u32>,
    minor: Option<u32>,
    /// `ACCESS_*` bits.
    access: u8,
}

impl DeviceRule {
    /// Checks a spec rule: a type the device cgroup knows, numbers in range, access from `rwm`
    /// (absent means all three, as in runc's default rules).
    pub fn from_spec(rule: &LinuxDeviceCgroup) -> Result<DeviceRule> {
        let kind = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DeviceKind::Block),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DeviceKind::Char),
            LinuxDeviceType::P => {
                return Err(Error::InvalidSpec(format!(
                    "device rule {rule}: fifos are not device numbers; use type a, b or c"
                )))
            }
        };
        let number = |value: Option<i64>, what: &str| -> Result<Option<u32>> {
            match value {
                None => Ok(None),
                // runc writes -1 for "any"
                Some(-1) => Ok(None),
                Some(n) => u32::try_from(n)
                    .ok()
                    .filter(|&n| i32::try_from(n).is_ok())
                    .map(Some)
                    .ok_or_else(|| {
                        Error::InvalidSpec(format!(
                            "device rule {rule}: {what} {n} is out of range"
                        ))
                    }),
            }
        };
        let access = match rule.access().as_deref() {
            None | Some("") => ACCESS_ALL,
            Some(text) => text.chars().try_fold(0, |bits, c| match c {
                'r' => Ok(bits | ACCESS_READ),
                'w' => Ok(bits | ACCESS_WRITE),
                'm' => Ok(bits | ACCESS_MKNOD),
                other => Err(Error::InvalidSpec(format!(
                    "device rule {rule}: access {other:?} is not one of r, w, m"
                ))),
            })?,
        };
        Ok(DeviceRule {
            allow: rule.allow(),
            kind,
            major: number(rule.major(), "major")?,
            minor: number(rule.minor(), "minor")?,
            access,
        })
    }

    pub fn allow(&self) -> bool {
        self.allow
    }
}

/// The rule as a v1 `devices.allow`/`devices.deny` line (`c 1:3 rwm`, `a *:* rwm`).
impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            None => "a",
            Some(DeviceKind::Block) => "b",
            Some(DeviceKind::Char) => "c",
        };
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        let access: String = [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, c)| c)
            .collect();
        write!(
            f,
            "{kind} {}:{} {access}",
            number(self.major),
            number(self.minor)
        )
    }
}

/// Checks every rule of a spec's list.
pub fn rules_from_spec(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>> {
    rules.iter().map(DeviceRule::from_spec).collect()
}

/// The `BPF_PROG_TYPE_CGROUP_DEVICE` program deciding as the module's rules say, as raw instructions.
///
/// Registers: r2 device type, r3 access kinds not yet decided, r4 major, r5 minor (the context
/// is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`). Rules are checked
/// last to first; an allow clears its kinds from r3 and accepts once none is left, a deny that
/// names an undecided kind rejects. Every jump goes forward, as the verifier requires.
pub fn program(rules: &[DeviceRule]) -> Vec<u8> {
    /// Jump targets fixed up once the whole body is known.
    enum Target {
        Next,
        Accept,
        Reject,
    }
    let insn = |opc: u8, dst: u8, src: u8, off: i16, imm: i32| Insn {
        opc,
        dst,
        src,
        off,
        imm,
    };
    let mut body: Vec<(Insn, Option<Target>)> = vec![
        (insn(ebpf::LD_W_REG, 2, 1, 0, 0), None),
        (insn(ebpf::AND32_IMM, 2, 0, 0, 0xffff), None),
        (insn(ebpf::LD_W_REG, 3, 1, 0, 0), None),
        (insn(ebpf::RSH32_IMM, 3, 0, 0, 16), None),
        (insn(ebpf::LD_W_REG, 4, 1, 4, 0), None),
        (insn(ebpf::LD_W_REG, 5, 1, 8, 0), None),
        (insn(ebpf::JEQ_IMM, 3, 0, 0, 0), Some(Target::Accept)),
    ];
    for rule in rules.iter().rev() {
        let start = body.len();
        if let Some(kind) = rule.kind {
            body.push((insn(ebpf::JNE_IMM, 2, 0, 0, kind.bpf_type()), None));
        }
        // Numbers were checked to fit an i32 (the kernel's are 12 and 20 bits).
        if let Some(major) = rule.major {
            body.push((insn(ebpf::JNE_IMM, 4, 0, 0, major as i32), None));
        }
        if let Some(minor) = rule.minor {
            body.push((insn(ebpf::JNE_IMM, 5, 0, 0, minor as i32), None));
        }
        for entry in &mut body[start..] {
            entry.1 = Some(Target::Next);
        }
        let access = i32::from(rule.access);
        if rule.allow {
            body.push((insn(ebpf::AND32_IMM, 3, 0, 0, !access), None));
            body.push((insn(ebpf::JEQ_IMM, 3, 0, 0, 0), Some(Target::Accept)));
        } else {
            body.push((insn(ebpf::JSET_IMM, 3, 0, 0, access), Some(Target::Reject)));
        }
        // The rule's "next" is the instruction after its block.
        let next = body.len();
        for (index, entry) in body.iter_mut().enumerate().skip(start) {
            if matches!(entry.1, Some(Target::Next)) {
                entry.0.off = (next - index - 1) as i16;
                entry.1 = None;
            }
        }
    }
    let reject = body.len();
    body.push((insn(ebpf::MOV32_IMM, 0, 0, 0, 0), None));
    body.push((insn(ebpf::EXIT, 0, 0, 0, 0), None));
    let accept = body.len();
    body.push((insn(ebpf::MOV32_IMM, 0, 0, 0, 1), None));
    body.push((insn(ebpf::EXIT, 0, 0, 0, 0), None));
    body.iter()
        .enumerate()
        .flat_map(|(index, (insn, target))| {
            let mut insn = insn.clone();
            match target {
                Some(Target::Accept) => insn.off = (accept - index - 1) as i16,
                Some(Target::Reject) => insn.off = (reject - index - 1) as i16,
                _ => {}
            }
            insn.to_array()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> DeviceRule {
        let mut builder = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(major) = major {
            builder = builder.major(major);
        }
        if let Some(minor) = minor {
            builder = builder.minor(minor);
        }
        DeviceRule::from_spec(&builder.build().unwrap()).unwrap()
    }

    /// The decision the rule list makes for one request: each requested access kind is decided by
    /// the last rule that names it and matches the device; kinds no rule decides are denied.
    fn allows(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, access: u8) -> bool {
        let mut undecided = access;
        for rule in rules.iter().rev() {
            if undecided == 0 {
                break;
            }
            let matches = rule.kind.is_none_or(|k| k == kind)
                && rule.major.is_none_or(|m| m == major)
                && rule.minor.is_none_or(|m| m == minor);
            if !matches {
                continue;
            }
            if rule.allow {
                undecided &= !rule.access;
            } else if undecided & rule.access != 0 {
                return false;
            }
        }
        undecided == 0
    }

    /// Runs the generated program on one request in an eBPF interpreter.
    fn run(rules: &[DeviceRule], kind: DeviceKind, major: u32, minor: u32, access: u8) -> bool {
        let code = program(rules);
        let vm = rbpf::EbpfVmRaw::new(Some(&code)).unwrap();
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&((u32::from(access) << 16) | kind.bpf_type() as u32).to_le_bytes());
        ctx.extend_from_slice(&major.to_le_bytes());
        ctx.extend_from_slice(&minor.to_le_bytes());
        match vm.execute_program(&mut ctx).unwrap() {
            0 => false,
            1 => true,
            other => panic!("the program returned {other}"),
        }
    }

    /// Every request over a small device space, program against the reference decision.
    fn assert_program_matches(rules: &[DeviceRule]) {
        for kind in [DeviceKind::Block, DeviceKind::Char] {
            for major in [0, 1, 5, 8, 10, 136] {
                for minor in [0, 1, 3, 5, 200] {
                    for access in 1..=ACCESS_ALL {
                        assert_eq!(
                            run(rules, kind, major, minor, access),
                            allows(rules, kind, major, minor, access),
                            "{kind:?} {major}:{minor} access {access} under {rules:?}"
                        );
                    }
                }
            }
        }
    }

    const R: u8 = ACCESS_READ;
    const W: u8 = ACCESS_WRITE;
    const M: u8 = ACCESS_MKNOD;
    use DeviceKind::{Block, Char};
    use LinuxDeviceType::{A, B, C};

    #[test]
    fn an_empty_list_denies_everything() {
        assert!(!run(&[], Char, 1, 3, R));
        assert!(!run(&[], Block, 8, 0, R | W));
        assert_program_matches(&[]);
    }

    #[test]
    fn allowed_devices_open_and_others_stay_closed() {
        let rules = [
            rule(false, A, None, None, "rwm"),
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(true, C, Some(136), None, "rw"),
            rule(true, B, None, None, "m"),
        ];
        assert!(run(&rules, Char, 1, 3, R | W));
        assert!(!run(&rules, Char, 1, 5, R), "c 1:5 was never allowed");
        assert!(
            run(&rules, Char, 136, 7, W),
            "a wildcard minor matches any pty"
        );
        assert!(
            !run(&rules, Char, 136, 7, M),
            "but only for the kinds it names"
        );
        assert!(run(&rules, Block, 8, 0, M), "mknod of any block device");
        assert!(
            !run(&rules, Block, 8, 0, R),
            "opening one is another matter"
        );
        assert_program_matches(&rules);
    }

    #[test]
    fn the_last_matching_rule_wins() {
        let opened_then_closed = [
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(false, C, Some(1), Some(3), "w"),
        ];
        assert!(run(&opened_then_closed, Char, 1, 3, R));
        assert!(!run(&opened_then_closed, Char, 1, 3, W));
        assert!(
            !run(&opened_then_closed, Char, 1, 3, R | W),
            "O_RDWR needs both"
        );
        let closed_then_opened = [
            rule(false, A, None, None, "rwm"),
            rule(true, A, None, None, "rwm"),
            rule(false, B, Some(8), None, "r"),
        ];
        assert!(run(&closed_then_opened, Char, 10, 200, R | W));
        assert!(
            !run(&closed_then_opened, Block, 8, 1, R),
            "a hole in the wildcard"
        );
        assert!(run(&closed_then_opened, Block, 8, 1, W));
        assert_program_matches(&opened_then_closed);
        assert_program_matches(&closed_then_opened);
    }

    #[test]
    fn type_a_covers_block_and_char() {
        let rules = [rule(true, A, Some(5), None, "r")];
        assert!(run(&rules, Char, 5, 1, R));
        assert!(run(&rules, Block, 5, 1, R));
        assert!(!run(&rules, Char, 6, 1, R));
        assert_program_matches(&rules);
    }

    #[test]
    fn access_split_over_rules_is_combined() {
        let rules = [
            rule(true, C, Some(1), Some(3), "r"),
            rule(true, C, Some(1), None, "w"),
        ];
        assert!(run(&rules, Char, 1, 3, R | W));
        assert!(!run(&rules, Char, 1, 5, R | W));
        assert_program_matches(&rules);
    }

    #[test]
    fn the_default_list_matches_the_reference() {
        let resources = oci_spec::runtime::LinuxResources::default();
        let with_defaults = super::super::with_default_device_rules(&resources, &[]);
        let rules = rules_from_spec(with_defaults.devices().as_deref().unwrap()).unwrap();
        assert!(run(&rules, Char, 1, 3, R | W), "/dev/null");
        assert!(run(&rules, Char, 136, 0, R | W), "ptys");
        assert!(!run(&rules, Block, 8, 0, R), "a host disk");
        assert!(
            run(&rules, Block, 8, 0, M),
            "mknod is allowed, opening is not"
        );
        assert_program_matches(&rules);
    }

    #[test]
    fn rules_print_as_v1_lines_and_bad_ones_are_refused() {
        assert_eq!(rule(false, A, None, None, "rwm").to_string(), "a *:* rwm");
        assert_eq!(
            rule(true, C, Some(1), Some(3), "mr").to_string(),
            "c 1:3 rm"
        );
        let unset = DeviceRule::from_spec(
            &LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(unset.to_string(), "a *:* rwm");
        let bad_access = LinuxDeviceCgroupBuilder::default()
            .access("rx")
            .build()
            .unwrap();
        assert!(DeviceRule::from_spec(&bad_access).is_err());
        let fifo = LinuxDeviceCgroupBuilder::default()
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        assert!(DeviceRule::from_spec(&fifo).is_err());
        let huge = LinuxDeviceCgroupBuilder::default()
            .major(1i64 << 40)
            .build()
            .unwrap();
        assert!(DeviceRule::from_spec(&huge).is_err());
    }
}
