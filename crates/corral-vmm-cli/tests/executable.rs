//! The `corral-vmm` executable as the instance manager and users run it: a VM from flags, its
//! exit status, and its errors as one sentence. (Building these tests also builds the executable
//! beside `corral`, where corral's VM instance tests expect it.)

use std::process::{Command, Output, Stdio};

use corral_testkit::require_kvm;

fn corral_vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral-vmm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn it_runs_a_guest_under_its_filters_and_exits_with_the_guests_code() {
    require_kvm!();
    let guest = corral_guests::elf("exit");
    let output = corral_vmm(&[
        "--kernel",
        guest.to_str().unwrap(),
        "--memory",
        "16M",
        "--serial",
        "none",
    ]);
    // The exit guest writes 42 to the debug-exit port.
    assert_eq!(output.status.code(), Some(42), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("corral: vm stopped: poweroff"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_missing_kernel_is_one_sentence_naming_it() {
    let output = corral_vmm(&["--kernel", "/nonexistent/vmlinux", "--memory", "16M"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("corral-vmm: "), "{stderr}");
    assert!(stderr.contains("/nonexistent/vmlinux"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn it_names_itself_and_refuses_unknown_flags() {
    let version = corral_vmm(&["--version"]);
    assert!(version.status.success());
    assert!(text(&version.stdout).starts_with("corral-vmm "));
    let unknown = corral_vmm(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));
}
