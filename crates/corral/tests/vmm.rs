//! `corral vmm run` end to end: each test boots a freestanding test guest from `guests/` in the
//! real binary and checks its console output, the exit status and the exit reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_testkit::require_kvm;

const EXIT_REBOOT: i32 = 3;
const EXIT_CRASHED: i32 = 4;
const EXIT_KILLED: i32 = 5;
const TIMEOUT: Duration = Duration::from_secs(60);

fn corral() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corral"))
}

fn guest(name: &str) -> String {
    corral_guests::elf(name).display().to_string()
}

/// Runs `corral vmm run ARGS` to completion with `input` on stdin.
fn run_vm(args: &[&str], input: &str) -> Output {
    let mut child = corral()
        .args(["vmm", "run", "--memory", "32M"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    wait_with_timeout(child)
}

fn wait_with_timeout(mut child: Child) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("corral vmm run did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_stopped(output: &Output, code: i32, reason: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {stderr}",
        text(&output.stdout)
    );
    assert!(
        stderr.contains(&format!("corral: vm stopped: {reason} (")),
        "reason {reason} expected in: {stderr}"
    );
}

#[test]
fn hello_guest_boots_through_pvh_with_cmdline_and_initrd() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, "initrd-marker\nrest").unwrap();
    let output = run_vm(
        &[
            "--kernel",
            &guest("hello"),
            "--cmdline",
            "console=ttyS0 answer=42",
            "--initrd",
            initrd.to_str().unwrap(),
        ],
        "",
    );
    assert_stopped(&output, 0, "poweroff");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("hello from a corral test guest"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cmdline: console=ttyS0 answer=42\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("initrd: 18 bytes: initrd-marker\n"),
        "{stdout}"
    );
}

#[test]
fn bzimage_guest_boots_through_the_64_bit_boot_protocol() {
    require_kvm!();
    let kernel = corral_guests::hello_bzimage();
    let output = run_vm(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "via=bzimage",
        ],
        "",
    );
    assert_stopped(&output, 0, "poweroff");
    let stdout = text(&output.stdout);
    assert!(stdout.contains("cmdline: via=bzimage\n"), "{stdout}");
}

#[test]
fn guest_reads_console_input() {
    require_kvm!();
    let output = run_vm(&["--kernel", &guest("echo")], "ping\n");
    // The echo guest exits with the length of the line it read.
    assert_stopped(&output, 4, "poweroff");
    assert!(text(&output.stdout).contains("echo: ping\n"));
}

#[test]
fn debug_exit_code_becomes_the_exit_status() {
    require_kvm!();
    let output = run_vm(&["--kernel", &guest("exit")], "");
    assert_stopped(&output, 42, "poweroff");
    assert!(text(&output.stderr).contains("exit code 42"));
}

#[test]
fn i8042_reset_ends_the_vm_as_a_reboot() {
    require_kvm!();
    let output = run_vm(&["--kernel", &guest("reset"), "--on-reboot", "destroy"], "");
    assert_stopped(&output, EXIT_REBOOT, "reboot");
    assert!(text(&output.stdout).contains("resetting"));
}

#[test]
fn acpi_tables_lead_the_guest_to_s5_power_off_and_to_the_reset_register() {
    require_kvm!();
    let output = run_vm(&["--kernel", &guest("acpi")], "");
    assert_stopped(&output, 0, "poweroff");
    assert!(text(&output.stderr).contains("ACPI S5"));
    assert!(text(&output.stdout).contains("acpi: entering S5 (SLP_TYP 5) through port 0x600"));

    let reset = ["--kernel", &guest("acpi"), "--cmdline", "acpi=reset"];
    let output = run_vm(&[&reset[..], &["--on-reboot", "destroy"]].concat(), "");
    assert_stopped(&output, EXIT_REBOOT, "reboot");
    assert!(text(&output.stderr).contains("ACPI reset register"));
}

#[test]
fn triple_fault_is_a_crash_with_registers_in_the_log() {
    require_kvm!();
    let output = run_vm(&["--kernel", &guest("triple-fault")], "");
    assert_stopped(&output, EXIT_CRASHED, "crashed");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("triple fault"), "{stderr}");
    assert!(stderr.contains("rip=0x"), "{stderr}");
    // ud2 (0f 0b) is the faulting instruction.
    assert!(stderr.contains("code at rip: [0f, 0b"), "{stderr}");
}

/// A VMM running in the background with its console captured.
struct RunningVm {
    child: Child,
    stdout: Arc<Mutex<String>>,
    control: PathBuf,
    _dir: tempfile::TempDir,
}

impl RunningVm {
    fn start(kernel: &str, extra: &[&str]) -> RunningVm {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("control.sock");
        let mut child = corral()
            .args(["vmm", "run", "--memory", "32M", "--kernel", kernel])
            .arg("--control-socket")
            .arg(&control)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 1024];
            while let Ok(read @ 1..) = pipe.read(&mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        RunningVm {
            child,
            stdout,
            control,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn wait_for_output(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + TIMEOUT;
        while self.output().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "{needle:?} x{count} not seen; output: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one request with `corral vmm control` and returns the parsed JSON answer.
    fn control(&self, request: &[&str]) -> serde_json::Value {
        let output = corral()
            .args(["vmm", "control"])
            .arg(&self.control)
            .args(request)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn finish(mut self) -> (ExitStatus, String) {
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = self.child.wait().unwrap();
        (status, stderr)
    }
}

/// The highest "count N" line the counter guest printed.
fn last_count(output: &str) -> u64 {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("count "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn pause_freezes_the_guest_and_resume_continues_it() {
    require_kvm!();
    let vm = RunningVm::start(&guest("counter"), &[]);
    vm.wait_for_output("count ", 2);
    assert_eq!(vm.control(&["status"])["state"], "running");

    assert_eq!(vm.control(&["pause"])["state"], "paused");
    let frozen = vm.output();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(vm.output(), frozen, "the guest ran while paused");
    assert_eq!(vm.control(&["status"])["state"], "paused");

    assert_eq!(vm.control(&["resume"])["state"], "running");
    let before = last_count(&frozen);
    let deadline = Instant::now() + TIMEOUT;
    while last_count(&vm.output()) <= before {
        assert!(Instant::now() < deadline, "the guest did not continue");
        std::thread::sleep(Duration::from_millis(20));
    }
    // It continued from where it stopped rather than starting over.
    assert_eq!(vm.output().matches("count 0\n").count(), 1);

    let info = vm.control(&["info"]);
    assert_eq!(info["kind"], "vm");
    assert_eq!(info["vcpus"], 1);
    assert_eq!(info["memory_bytes"], 32 << 20);
    assert!(info["counters"]["exits_io_out"].as_u64().unwrap() > 0);
    assert!(info["uptime_secs"].as_f64().unwrap() > 0.0);

    assert_eq!(vm.control(&["kill"])["state"], "stopping");
    let (status, stderr) = vm.finish();
    assert_eq!(status.code(), Some(EXIT_KILLED), "{stderr}");
    assert!(stderr.contains("vm stopped: killed"), "{stderr}");
}

#[test]
fn shutdown_sends_ctrl_alt_del_and_the_guest_powers_off() {
    require_kvm!();
    let vm = RunningVm::start(&guest("ctrl-alt-del"), &[]);
    vm.wait_for_output("waiting for ctrl-alt-del", 1);
    assert_eq!(vm.control(&["shutdown"])["state"], "stopping");
    let (status, stderr) = vm.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("vm stopped: poweroff"), "{stderr}");
}

#[test]
fn shutdown_forces_a_guest_that_ignores_it() {
    require_kvm!();
    let vm = RunningVm::start(&guest("counter"), &[]);
    vm.wait_for_output("count ", 1);
    vm.control(&["shutdown", "--timeout-secs", "1"]);
    let (status, stderr) = vm.finish();
    assert_eq!(status.code(), Some(EXIT_KILLED), "{stderr}");
    assert!(stderr.contains("did not shut down within 1s"), "{stderr}");
}

#[test]
fn reboot_restarts_the_guest_in_the_same_process() {
    require_kvm!();
    let vm = RunningVm::start(&guest("reset"), &["--on-reboot", "restart"]);
    vm.wait_for_output("resetting\n", 3);
    let info = vm.control(&["info"]);
    assert!(info["restarts"].as_u64().unwrap() >= 2, "{info}");
    vm.control(&["kill"]);
    let (status, _) = vm.finish();
    assert_eq!(status.code(), Some(EXIT_KILLED));
}

#[test]
fn a_reboot_after_shutdown_ends_the_vm_even_with_restart_policy() {
    require_kvm!();
    // The reset guest reboots at once, as Linux does in answer to Ctrl-Alt-Del.
    let vm = RunningVm::start(&guest("reset"), &["--on-reboot", "restart"]);
    vm.wait_for_output("resetting\n", 2);
    vm.control(&["shutdown", "--timeout-secs", "30"]);
    let (status, stderr) = vm.finish();
    assert_eq!(status.code(), Some(EXIT_REBOOT), "{stderr}");
    assert!(stderr.contains("vm stopped: reboot"), "{stderr}");
}

#[test]
fn exit_file_records_why_the_vm_stopped() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit.json");
    let output = run_vm(
        &[
            "--kernel",
            &guest("exit"),
            "--exit-file",
            exit_file.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.code().is_some());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exit_file).unwrap()).unwrap();
    assert_eq!(record["reason"], "poweroff");
    assert_eq!(record["code"], output.status.code().unwrap());

    let crash_file = dir.path().join("crash.json");
    run_vm(
        &[
            "--kernel",
            &guest("triple-fault"),
            "--exit-file",
            crash_file.to_str().unwrap(),
        ],
        "",
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&crash_file).unwrap()).unwrap();
    assert_eq!(record["reason"], "crashed");
    assert!(
        record["detail"].as_str().is_some_and(|d| !d.contains('\n')),
        "{record}"
    );

    let failed_file = dir.path().join("failed.json");
    run_vm(
        &[
            "--kernel",
            "/nonexistent/vmlinux",
            "--exit-file",
            failed_file.to_str().unwrap(),
        ],
        "",
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&failed_file).unwrap()).unwrap();
    assert_eq!(record["reason"], "failed");
}

#[test]
fn a_second_vmm_cannot_take_a_control_socket_in_use() {
    require_kvm!();
    let vm = RunningVm::start(&guest("counter"), &[]);
    vm.wait_for_output("count ", 1);
    let output = run_vm(
        &[
            "--kernel",
            &guest("hello"),
            "--control-socket",
            vm.control.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("in use"),
        "{}",
        text(&output.stderr)
    );
    // The first VMM still answers on its socket.
    assert_eq!(vm.control(&["status"])["state"], "running");
    vm.control(&["kill"]);
    let control = vm.control.clone();
    let (status, _) = vm.finish();
    assert_eq!(status.code(), Some(EXIT_KILLED));
    assert!(!control.exists(), "the control socket is removed on exit");
}

#[test]
fn toml_config_with_file_console() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vm.toml");
    std::fs::write(
        &config,
        format!(
            "kernel = {:?}\nmemory = \"16M\"\ncmdline = \"from=toml\"\nserial = {{ file = \"console.log\" }}\n",
            guest("hello")
        ),
    )
    .unwrap();
    let output = corral()
        .args(["vmm", "run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_stopped(&output, 0, "poweroff");
    assert!(
        output.stdout.is_empty(),
        "console went to the file, not stdout"
    );
    let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    assert!(console.contains("cmdline: from=toml\n"), "{console}");
}

#[test]
fn console_socket_carries_output_and_input() {
    require_kvm!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("console.sock");
    let child = corral()
        .args(["vmm", "run", "--memory", "16M", "--kernel", &guest("echo")])
        .arg("--serial")
        .arg(format!("socket:{}", socket.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => panic!("console socket never appeared: {err}"),
        }
    };
    (&stream).write_all(b"over-socket\n").unwrap();
    let mut lines = BufReader::new(&stream).lines();
    let echoed = lines
        .find(|line| line.as_ref().is_ok_and(|l| l.starts_with("echo: ")))
        .unwrap()
        .unwrap();
    assert_eq!(echoed, "echo: over-socket");
    let output = wait_with_timeout(child);
    assert_stopped(&output, 11, "poweroff");
    assert!(!socket.exists(), "the console socket is removed on exit");
}

#[test]
fn bad_input_gets_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_kernel = dir.path().join("notes.txt");
    std::fs::write(&not_a_kernel, "just text\n").unwrap();
    let mut arm = std::fs::read(corral_guests::elf("hello")).unwrap();
    arm[18..20].copy_from_slice(&183u16.to_le_bytes()); // e_machine = AArch64
    let arm_kernel = dir.path().join("arm.elf");
    std::fs::write(&arm_kernel, arm).unwrap();
    let big_initrd = dir.path().join("initrd");
    std::fs::write(&big_initrd, vec![0u8; 3 << 20]).unwrap();
    let bzimage = corral_guests::hello_bzimage();
    let long_cmdline = "x".repeat(300);
    let hello = guest("hello");

    let cases: &[(&[&str], &str)] = &[
        (
            &["--kernel", "/nonexistent/vmlinux"],
            "cannot open kernel /nonexistent/vmlinux",
        ),
        (
            &["--kernel", not_a_kernel.to_str().unwrap()],
            "neither an ELF vmlinux nor a bzImage",
        ),
        (
            &["--kernel", arm_kernel.to_str().unwrap()],
            "machine 183, not x86_64",
        ),
        (
            &[
                "--kernel",
                &hello,
                "--memory",
                "2M",
                "--initrd",
                big_initrd.to_str().unwrap(),
            ],
            "too small for the kernel",
        ),
        (
            &["--kernel", &hello, "--vcpus", "255"],
            "vcpus must be between 1 and 254",
        ),
        (
            &[
                "--kernel",
                bzimage.to_str().unwrap(),
                "--cmdline",
                &long_cmdline,
            ],
            "longer than the 255 bytes",
        ),
        (&[], "no kernel given"),
    ];
    for (args, message) in cases {
        let output = corral().args(["vmm", "run"]).args(*args).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: {message:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    let bad_size = corral()
        .args(["vmm", "run", "--kernel", &hello, "--memory", "lots"])
        .output()
        .unwrap();
    assert_eq!(
        bad_size.status.code(),
        Some(2),
        "usage errors come from clap"
    );
    assert!(text(&bad_size.stderr).contains("like 256M or 1G"));

    let config = dir.path().join("vm.toml");
    std::fs::write(&config, "kernel = \"k\"\nvcpu = 2\n").unwrap();
    let output = corral()
        .args(["vmm", "run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("line 2: unknown field `vcpu`"));
}

#[test]
fn a_burst_of_control_connections_leaves_the_vmm_running() {
    require_kvm!();
    let vm = RunningVm::start(&guest("counter"), &[]);
    vm.wait_for_output("count ", 2);
    // Each connection is a VMM thread that allocates; many at once once made glibc open a file
    // (to size its malloc arenas) from a thread whose seccomp filter forbids openat.
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let socket = vm.control.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mut client =
                        corral_control::Client::connect(&socket, Duration::from_secs(10)).unwrap();
                    // Past the connection cap the answer is the refusal, which is fine too.
                    match client.call(&corral_control::Request::Info) {
                        Ok(corral_control::Response::Info(_)) => {}
                        Ok(corral_control::Response::Error { message })
                            if message.contains("at most 16 control connections") => {}
                        other => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(vm.control(&["status"])["state"], "running");
    assert_eq!(vm.control(&["kill"])["state"], "stopping");
    let (_, stderr) = vm.finish();
    assert!(!stderr.contains("seccomp"), "{stderr}");
}
