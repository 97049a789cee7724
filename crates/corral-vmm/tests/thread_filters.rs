//! Each thread class's own code paths, run on a thread confined by that class's seccomp filter:
//! a call the filter forgot kills this test process with `SIGSYS` (and the handler's line names
//! it). Paths a boot rarely takes are driven here directly: a console client that stops reading,
//! the console log's rotation on a vCPU, the VMM's own log rotated by its main thread.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_control::console::{ConsoleHub, CLIENT_BUFFER_LIMIT, DEFAULT_LOG_LIMIT};
use corral_control::log::StdioLog;
use corral_control::{After, Client, Request, Response, RunState, ServerLimits};
use corral_vmm::seccomp::{self, ThreadClass};

/// Runs `body` on a new thread confined to `class`'s filter and waits for it.
fn confined<T: Send + 'static>(class: ThreadClass, body: impl FnOnce() -> T + Send + 'static) -> T {
    seccomp::prepare().unwrap();
    std::thread::spawn(move || {
        seccomp::apply(class).unwrap();
        body()
    })
    .join()
    .unwrap()
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached");
}

#[test]
fn console_threads_serve_clients_and_a_vcpu_drops_one_that_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("console.sock");
    let listener = corral_control::bind(&socket).unwrap();
    let hub = ConsoleHub::new(None, DEFAULT_LOG_LIMIT).unwrap();
    let typed = Arc::new(Mutex::new(Vec::new()));
    let sink = typed.clone();
    let accepting = hub.clone();
    seccomp::prepare().unwrap();
    // The console socket's thread, as the VMM starts it (its session threads inherit its filter).
    std::thread::spawn(move || {
        seccomp::apply(ThreadClass::Console).unwrap();
        accepting.accept_loop(listener, move |bytes| {
            sink.lock().unwrap().extend_from_slice(bytes)
        });
    });
    let mut client = UnixStream::connect(&socket).unwrap();
    wait_until(|| hub.attached());
    client.write_all(b"typed").unwrap();
    wait_until(|| typed.lock().unwrap().as_slice() == b"typed");
    // A second client is told the console is taken.
    let mut second = UnixStream::connect(&socket).unwrap();
    let mut refusal = String::new();
    second.read_to_string(&mut refusal).unwrap();
    assert!(refusal.contains("attached by another client"), "{refusal}");

    // The guest prints past what a client that reads nothing may fall behind, from a vCPU.
    let mut serial = hub.clone();
    confined(ThreadClass::Vcpu, move || {
        let line = [b'x'; 4096];
        for _ in 0..(2 * CLIENT_BUFFER_LIMIT / line.len()) {
            serial.write_all(&line).unwrap();
        }
    });
    assert!(!hub.attached(), "the client was dropped");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    client.read_to_end(&mut received).unwrap();
    assert!(received.len() < 2 * CLIENT_BUFFER_LIMIT);
}

#[test]
fn a_vcpu_rotates_the_console_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let hub = ConsoleHub::new(Some(&log), 10).unwrap();
    let mut serial = hub.clone();
    confined(ThreadClass::Vcpu, move || {
        serial.write_all(b"0123456789").unwrap();
        serial.write_all(b"abc").unwrap();
    });
    assert_eq!(
        std::fs::read(dir.path().join("console.log.1")).unwrap(),
        b"0123456789"
    );
    assert_eq!(std::fs::read(&log).unwrap(), b"abc");
}

#[test]
fn control_threads_answer_refuse_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let listener = corral_control::bind(&socket).unwrap();
    let limits = ServerLimits {
        max_connections: 1,
        idle_timeout: Duration::from_millis(500),
    };
    seccomp::prepare().unwrap();
    std::thread::spawn(move || {
        seccomp::apply(ThreadClass::Control).unwrap();
        corral_control::run_server(listener, limits, |_| {
            let state = RunState::Running;
            // A shutdown's timer thread sleeps, as the VMM's does.
            let timer = || std::thread::sleep(Duration::from_millis(10));
            (Response::State { state }, After::Then(Box::new(timer)))
        });
    });
    let mut first = Client::connect(&socket, Duration::from_secs(10)).unwrap();
    let running = Response::State {
        state: RunState::Running,
    };
    assert_eq!(first.call(&Request::Status).unwrap(), running);
    let mut refused = Client::connect(&socket, Duration::from_secs(10)).unwrap();
    assert!(matches!(
        refused.call(&Request::Status),
        Ok(Response::Error { .. })
    ));
    // The first connection idles past its timeout and is closed; a new one is served.
    std::thread::sleep(Duration::from_secs(1));
    let mut again = Client::connect(&socket, Duration::from_secs(10)).unwrap();
    assert_eq!(again.call(&Request::Status).unwrap(), running);
}

/// Set in the child of the next test: the path of the log its stderr points at.
const CHILD_LOG_ENV: &str = "CORRAL_THREAD_FILTERS_TEST_LOG";

#[test]
fn child_rotates_its_log_from_the_vmm_thread() {
    let Some(path) = std::env::var_os(CHILD_LOG_ENV) else {
        return;
    };
    let log = StdioLog::new(path, 10);
    let rotated = confined(ThreadClass::Vmm, move || {
        let rotated = log.rotate_if_full().unwrap();
        eprintln!("after the rotation");
        rotated
    });
    assert!(rotated);
}

#[test]
fn the_vmm_thread_rotates_the_vmm_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.log");
    std::fs::write(&path, "a full log\n").unwrap();
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_rotates_its_log_from_the_vmm_thread"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD_LOG_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    let current = std::fs::read_to_string(&path).unwrap();
    assert!(status.success(), "{status}: {current}");
    assert!(current.contains("after the rotation"), "{current}");
    assert_eq!(
        std::fs::read_to_string(rotated(&path)).unwrap(),
        "a full log\n"
    );
}

fn rotated(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    name.into()
}

#[test]
fn a_console_thread_waits_while_the_guest_has_not_read_its_input() {
    use corral_vmm::devices::bus::BusDevice;
    use corral_vmm::devices::interrupt::IrqLine;
    use corral_vmm::devices::legacy::serial::{feed_input, SerialDevice, SerialOutput};
    let line = IrqLine::new(4).unwrap();
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        line.trigger(),
        SerialOutput::Discard,
    )));
    // As the VMM does once the machine exists.
    serial.lock().unwrap().release_input();
    seccomp::prepare().unwrap();
    // A client types more than the UART's FIFO holds before the guest reads any of it: the
    // console thread waits for room, as a typist would.
    let typed = serial.clone();
    let feeder = std::thread::spawn(move || {
        seccomp::apply(ThreadClass::Console).unwrap();
        feed_input(&typed, &[b'x'; 1000]);
    });
    let mut received = 0;
    while received < 1000 {
        // The guest reads the receive register (offset 0) when the line status says data waits.
        let mut status = [0u8];
        serial.lock().unwrap().read(5, &mut status);
        if status[0] & 1 == 1 {
            let mut byte = [0u8];
            serial.lock().unwrap().read(0, &mut byte);
            assert_eq!(byte[0], b'x');
            received += 1;
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    feeder.join().unwrap();
}
