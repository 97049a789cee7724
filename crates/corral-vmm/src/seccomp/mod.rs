//! Per-thread seccomp filters of the VMM process, after Firecracker's: every thread the VMM
//! starts belongs to a [`ThreadClass`] and installs that class's filter as the first thing it
//! does (the main thread once the VM's host resources are open, before the first guest
//! instruction runs). A filter allows only the system calls its class makes, some only with
//! the arguments it passes (the KVM ioctls of a vCPU, the signals a thread may send, mappings
//! that are never executable); anything else traps.
//!
//! A trapped call runs [`report_forbidden_call`] on the offending thread: it writes one line
//! to stderr naming the thread and the system call, then the process dies of `SIGSYS` (the
//! default action, restored by `SA_RESETHAND`). Failing loudly beats Firecracker's silent
//! kill: the line tells a user which call a filter forgot.
//!
//! Filters stack: a thread started by a confined thread inherits its filter and adds its own on
//! top. So a thread class that starts threads allows what those threads need (the main thread
//! starts the vCPUs), and the device I/O threads are started once by the main thread before it
//! is confined, never by the vCPU that activates a device.

mod rules;

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use syscalls::Sysno;

/// The kinds of threads in the VMM process, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadClass {
    /// The main thread: builds (and rebuilds, on a guest restart) the VM, starts and stops the
    /// vCPUs, writes the exit record.
    Vmm,
    /// A vCPU: `KVM_RUN` and the emulated devices' registers.
    Vcpu,
    /// The I/O thread of a virtio-blk device.
    Block,
    /// The I/O thread of a virtio-net device.
    Net,
    /// The I/O thread of the virtio-rng device.
    Rng,
    /// The I/O thread of the virtio-vsock device.
    Vsock,
    /// The control socket's accept thread, its connections and their shutdown timers.
    Control,
    /// Console input: the console socket's accept thread and clients, or stdin.
    Console,
}

impl ThreadClass {
    pub const ALL: [ThreadClass; 8] = [
        ThreadClass::Vmm,
        ThreadClass::Vcpu,
        ThreadClass::Block,
        ThreadClass::Net,
        ThreadClass::Rng,
        ThreadClass::Vsock,
        ThreadClass::Control,
        ThreadClass::Console,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadClass::Vmm => "vmm",
            ThreadClass::Vcpu => "vcpu",
            ThreadClass::Block => "virtio-blk",
            ThreadClass::Net => "virtio-net",
            ThreadClass::Rng => "virtio-rng",
            ThreadClass::Vsock => "virtio-vsock",
            ThreadClass::Control => "control",
            ThreadClass::Console => "console",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter of the {class} threads")]
    Build {
        class: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install the SIGSYS handler that reports forbidden system calls")]
    Handler(#[source] std::io::Error),
    #[error("cannot install the seccomp filter of a {class} thread")]
    Apply {
        class: &'static str,
        #[source]
        source: seccompiler::Error,
    },
}

/// The compiled filters, one per class (indexed like [`ThreadClass::ALL`]); set once per
/// process when the VMM runs with seccomp. Unset, [`enter`] does nothing (unit tests, fuzz
/// targets, `--no-seccomp`).
static FILTERS: OnceLock<Vec<BpfProgram>> = OnceLock::new();

/// Compiles every class's filter and installs the `SIGSYS` handler. Call once, while the process
/// is still single-threaded; later threads confine themselves with [`enter`].
pub fn prepare() -> Result<(), SeccompError> {
    let pid = nix::unistd::getpid().as_raw();
    let mut programs = Vec::with_capacity(ThreadClass::ALL.len());
    for class in ThreadClass::ALL {
        let build = |source| SeccompError::Build {
            class: class.name(),
            source,
        };
        let filter = SeccompFilter::new(
            rules::for_class(class, pid).map_err(build)?,
            SeccompAction::Trap,
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(build)?;
        programs.push(BpfProgram::try_from(filter).map_err(build)?);
    }
    install_sigsys_handler()?;
    one_malloc_arena();
    // A second VM in one process does not happen; the first set of filters stays.
    let _ = FILTERS.set(programs);
    Ok(())
}

/// Makes every thread allocate from glibc's main arena. With per-thread arenas, glibc opens
/// files from whichever thread needs them: `/sys/devices/system/cpu/online` when the ninth arena
/// is made (to size the arena limit), `/proc/sys/vm/overcommit_memory` when a thread's heap
/// first shrinks; no confined thread may `openat`, so a burst of control connections killed the
/// VMM. The threads here allocate little, and each still has its own cache (tcache). (musl's
/// allocator, of the static corral-vmm, has no arenas and opens nothing.)
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc parameter; M_ARENA_MAX with 1 is a valid setting.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Confines the calling thread to `class`'s filter (and sets its no-new-privileges flag), if
/// [`prepare`] ran.
pub fn apply(class: ThreadClass) -> Result<(), SeccompError> {
    let Some(programs) = FILTERS.get() else {
        return Ok(());
    };
    remember_thread_name();
    let index = ThreadClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or_default();
    seccompiler::apply_filter(&programs[index]).map_err(|source| SeccompError::Apply {
        class: class.name(),
        source,
    })
}

/// [`apply`] for a thread that has nobody to return an error to: it cannot run unconfined, so
/// the process ends (status 1) with the reason on stderr.
pub fn enter(class: ThreadClass) {
    if let Err(err) = apply(class) {
        eprintln!("corral: {}", corral_host::error_chain(&err));
        std::process::exit(1);
    }
}

thread_local! {
    /// The thread's name (`comm`), read before its filter goes on, for the SIGSYS report.
    static THREAD_NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

fn remember_thread_name() {
    let mut name = [0u8; 16];
    // Raw: nix 0.31's get_name lets the kernel write into a buffer it lends immutably, and
    // allocates. A name that cannot be read stays empty: the report is best effort.
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into the buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    THREAD_NAME.with(|cell| cell.set(name));
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: sigaction is plain data; all zeroes is a valid starting value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = report_forbidden_call as *const () as usize;
    // SA_RESETHAND: the handler runs once; the SIGSYS it raises then takes the default action.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
    // SAFETY: the handler only calls async-signal-safe functions (write, getpid, gettid, tgkill)
    // and formats into a stack buffer; `action` is a valid sigaction.
    let result = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if result != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The `SIGSYS` part of `siginfo_t` on x86_64 (`_sigsys` in the kernel's union, which the libc
/// crate does not expose).
#[repr(C)]
struct SigsysInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    _pad: libc::c_int,
    call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    arch: libc::c_uint,
}

/// A line-sized buffer on the stack: formatting into it never allocates, so it is usable in a
/// signal handler.
struct Line {
    bytes: [u8; 320],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The `SIGSYS` handler: one line on stderr, then death by `SIGSYS`.
extern "C" fn report_forbidden_call(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS, whose layout SigsysInfo mirrors.
    let number = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    let call = usize::try_from(number)
        .ok()
        .and_then(Sysno::new)
        .map_or("an unknown call", |sysno| sysno.name());
    let name = THREAD_NAME.with(Cell::get);
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let thread = std::str::from_utf8(&name[..end]).unwrap_or("?");
    let mut line = Line {
        bytes: [0; 320],
        len: 0,
    };
    let _ = writeln!(
        line,
        "corral: seccomp: thread {thread} made the forbidden system call {call} ({number}); \
         the VMM stops (a corral bug unless the guest took over the VMM; --no-seccomp turns \
         the filters off)"
    );
    // SAFETY: write, getpid, gettid and tgkill are async-signal-safe; the buffer is ours. The
    // SIGSYS raised here is blocked until the handler returns, then kills the process.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.bytes.as_ptr().cast(), line.len);
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            libc::gettid(),
            libc::SIGSYS,
        );
    }
}
