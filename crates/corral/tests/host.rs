//! `corral host check` and `corral host info` on the real host.

use std::process::Command;

use corral_testkit::require_kvm;

fn corral(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .output()
        .expect("run corral")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = corral(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "corral {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn host_check_reports_kvm_usable() {
    require_kvm!();
    let out = corral(&["host", "check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "host check failed here:\n{text}");
    for id in ["kvm.device", "kvm.api", "kvm.capabilities", "kvm.create-vm"] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_else(|| panic!("no {id} line in:\n{text}"));
        assert!(line.starts_with("PASS"), "{line}");
    }
    assert!(
        text.contains("this host can run VMs and containers"),
        "{text}"
    );
}

#[test]
fn host_check_json_matches_text_verdict() {
    require_kvm!();
    let report = json(&["host", "check", "--output", "json"]);
    let checks = report["checks"].as_array().expect("checks array");
    assert!(checks.len() > 20, "{report}");
    let worst = checks
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .max_by_key(|s| ["PASS", "WARN", "FAIL"].iter().position(|x| x == s))
        .unwrap();
    assert_eq!(report["result"], worst);
    assert_ne!(report["result"], "FAIL");
    let virt = checks
        .iter()
        .find(|c| c["id"] == "cpu.virtualization")
        .unwrap();
    let has_vmx_svm = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|w| w == "vmx" || w == "svm");
    // Without VT-x/AMD-V a usable KVM must be explained (nested or paravirtual), as a warning.
    if !has_vmx_svm {
        assert_eq!(virt["status"], "WARN", "{virt}");
        assert!(
            virt["hint"].as_str().unwrap().contains("emulator"),
            "{virt}"
        );
    }
}

#[test]
fn host_info_json_agrees_with_the_kernel() {
    let info = json(&["host", "info", "--output", "json"]);
    // SAFETY: sysconf has no preconditions.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    assert_eq!(
        info["cpu"]["logical_cpus"].as_i64().unwrap(),
        configured as i64
    );
    // SAFETY: sysinfo writes into the zeroed struct we pass.
    let total = unsafe {
        let mut si: libc::sysinfo = std::mem::zeroed();
        assert_eq!(libc::sysinfo(&mut si), 0);
        si.totalram as u64 * u64::from(si.mem_unit)
    };
    let reported = info["memory_total_bytes"].as_u64().unwrap();
    assert!(reported.abs_diff(total) < 1 << 20, "{reported} vs {total}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info["kernel"]["release"], release.trim());
    assert!(["v1", "v2", "hybrid"].contains(&info["cgroups"]["mode"].as_str().unwrap()));
}

#[test]
fn host_info_text_has_every_section() {
    let out = corral(&["host", "info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for label in [
        "CPU:",
        "Flags:",
        "Memory:",
        "Kernel:",
        "KVM:",
        "cgroups:",
        "Namespaces:",
    ] {
        assert!(text.contains(label), "missing {label} in:\n{text}");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = corral(&["host", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}
