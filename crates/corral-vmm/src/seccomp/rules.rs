//! What each thread class may call. The lists were derived from corral's own code and checked
//! with `strace -f` on real boots (Linux with disks, network and vsock; the freestanding device
//! guests): every call here has a reason next to it.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule,
};
use syscalls::Sysno;

use super::ThreadClass;

/// `ioctl` request numbers (`linux/kvm.h`, `linux/fs.h`, `asm-generic/ioctls.h`).
mod ioctl {
    pub const KVM_CREATE_VM: u64 = 0xae01;
    pub const KVM_CHECK_EXTENSION: u64 = 0xae03;
    pub const KVM_GET_VCPU_MMAP_SIZE: u64 = 0xae04;
    pub const KVM_CREATE_VCPU: u64 = 0xae41;
    pub const KVM_SET_USER_MEMORY_REGION: u64 = 0x4020_ae46;
    pub const KVM_SET_TSS_ADDR: u64 = 0xae47;
    pub const KVM_CREATE_IRQCHIP: u64 = 0xae60;
    pub const KVM_IRQFD: u64 = 0x4020_ae76;
    pub const KVM_CREATE_PIT2: u64 = 0x4040_ae77;
    pub const KVM_IOEVENTFD: u64 = 0x4040_ae79;
    pub const KVM_RUN: u64 = 0xae80;
    pub const KVM_GET_REGS: u64 = 0x8090_ae81;
    pub const KVM_SET_REGS: u64 = 0x4090_ae82;
    pub const KVM_GET_SREGS: u64 = 0x8138_ae83;
    pub const KVM_SET_SREGS: u64 = 0x4138_ae84;
    pub const KVM_SET_MSRS: u64 = 0x4008_ae89;
    pub const KVM_SET_FPU: u64 = 0x41a0_ae8d;
    pub const KVM_GET_LAPIC: u64 = 0x8400_ae8e;
    pub const KVM_SET_LAPIC: u64 = 0x4400_ae8f;
    pub const KVM_SET_CPUID2: u64 = 0x4008_ae90;
    pub const KVM_TRANSLATE: u64 = 0xc018_ae85;
    pub const KVM_GET_DIRTY_LOG: u64 = 0x4010_ae42;
    // The calls that save and restore a VM's state (snapshots), numbered from their argument
    // types as the kernel's _IOR/_IOW/_IOWR do.
    use kvm_bindings::{
        kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_irqchip, kvm_mp_state, kvm_msrs,
        kvm_pit_state2, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    };
    const fn kvm(direction: u64, nr: u64, size: usize) -> u64 {
        (direction << 30) | ((size as u64) << 16) | (0xae << 8) | nr
    }
    const W: u64 = 1;
    const R: u64 = 2;
    const RW: u64 = 3;
    use std::mem::size_of;
    pub const KVM_GET_MSRS: u64 = kvm(RW, 0x88, size_of::<kvm_msrs>());
    pub const KVM_GET_CPUID2: u64 = kvm(RW, 0x91, size_of::<kvm_cpuid2>());
    pub const KVM_GET_MP_STATE: u64 = kvm(R, 0x98, size_of::<kvm_mp_state>());
    pub const KVM_SET_MP_STATE: u64 = kvm(W, 0x99, size_of::<kvm_mp_state>());
    pub const KVM_GET_IRQCHIP: u64 = kvm(RW, 0x62, size_of::<kvm_irqchip>());
    pub const KVM_SET_IRQCHIP: u64 = kvm(R, 0x63, size_of::<kvm_irqchip>());
    pub const KVM_SET_CLOCK: u64 = kvm(W, 0x7b, size_of::<kvm_clock_data>());
    pub const KVM_GET_CLOCK: u64 = kvm(R, 0x7c, size_of::<kvm_clock_data>());
    pub const KVM_GET_PIT2: u64 = kvm(R, 0x9f, size_of::<kvm_pit_state2>());
    pub const KVM_SET_PIT2: u64 = kvm(W, 0xa0, size_of::<kvm_pit_state2>());
    pub const KVM_GET_VCPU_EVENTS: u64 = kvm(R, 0x9f, size_of::<kvm_vcpu_events>());
    pub const KVM_SET_VCPU_EVENTS: u64 = kvm(W, 0xa0, size_of::<kvm_vcpu_events>());
    pub const KVM_GET_DEBUGREGS: u64 = kvm(R, 0xa1, size_of::<kvm_debugregs>());
    pub const KVM_SET_DEBUGREGS: u64 = kvm(W, 0xa2, size_of::<kvm_debugregs>());
    pub const KVM_GET_XSAVE: u64 = kvm(R, 0xa4, size_of::<kvm_xsave>());
    pub const KVM_SET_XSAVE: u64 = kvm(W, 0xa5, size_of::<kvm_xsave>());
    pub const KVM_GET_XCRS: u64 = kvm(R, 0xa6, size_of::<kvm_xcrs>());
    pub const KVM_SET_XCRS: u64 = kvm(W, 0xa7, size_of::<kvm_xcrs>());
    pub const BLKDISCARD: u64 = 0x1277;
    pub const BLKZEROOUT: u64 = 0x127f;
    pub const FIONBIO: u64 = 0x5421;
}

/// Futex commands (the low bits of the operation; the private and clock flags may be set):
/// waits and wakes only, no requeueing or priority inheritance.
const FUTEX_COMMANDS: [u64; 4] = [
    libc::FUTEX_WAIT as u64,
    libc::FUTEX_WAKE as u64,
    libc::FUTEX_WAIT_BITSET as u64,
    libc::FUTEX_WAKE_BITSET as u64,
];
const FUTEX_COMMAND_MASK: u64 = 0x7f;

/// The flags of the one `openat` a vCPU makes: the console log reopened after rotation.
const LOG_OPEN_FLAGS: u64 = corral_control::log::APPEND_FLAGS as u64;

/// glibc's internal `SIGSETXID` (`__SIGRTMIN + 1`), which it hides from `SIGRTMIN`.
const GLIBC_SIGSETXID: u64 = 33;

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// A class's allow list under construction. A call allowed without conditions stays
/// unconditional (seccompiler reads an empty rule list as "any arguments").
struct List {
    rules: Rules,
    pid: libc::pid_t,
}

fn condition(arg: u8, op: Op, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, Len::Dword, op, value)
}

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, BackendError> {
    condition(arg, Op::Eq, value)
}

impl List {
    fn allow(&mut self, calls: &[Sysno]) {
        for call in calls {
            self.rules.insert(i64::from(call.id()), Vec::new());
        }
    }

    /// Allows `call` when all `conditions` hold (in addition to earlier rules for it).
    fn allow_when(
        &mut self,
        call: Sysno,
        conditions: Vec<Result<SeccompCondition, BackendError>>,
    ) -> Result<(), BackendError> {
        let conditions = conditions.into_iter().collect::<Result<Vec<_>, _>>()?;
        let rule = SeccompRule::new(conditions)?;
        match self.rules.get_mut(&i64::from(call.id())) {
            Some(rules) if rules.is_empty() => {} // Already unconditional.
            Some(rules) => rules.push(rule),
            None => {
                self.rules.insert(i64::from(call.id()), vec![rule]);
            }
        }
        Ok(())
    }

    fn allow_ioctls(&mut self, requests: &[u64]) -> Result<(), BackendError> {
        for &request in requests {
            self.allow_when(Sysno::ioctl, vec![eq(1, request)])?;
        }
        Ok(())
    }

    /// Signals to threads of this process: `tgkill(own pid, any thread, signal)`.
    fn allow_signals(&mut self, signals: &[libc::c_int]) -> Result<(), BackendError> {
        for &signal in signals {
            self.allow_when(
                Sysno::tgkill,
                vec![eq(0, self.pid as u64), eq(2, signal as u64)],
            )?;
        }
        Ok(())
    }

    /// What every thread does: memory, locks, signals, logging, its own end.
    fn base(&mut self) -> Result<(), BackendError> {
        self.allow(&[
            Sysno::brk,
            Sysno::munmap,
            Sysno::mremap,
            Sysno::madvise,
            Sysno::sched_yield,
            // Logging to stderr, and the SIGSYS report.
            Sysno::write,
            Sysno::close,
            Sysno::clock_gettime,
            Sysno::getpid,
            Sysno::gettid,
            Sysno::rt_sigreturn,
            Sysno::rt_sigprocmask,
            // Thread teardown removes the alternate signal stack.
            Sysno::sigaltstack,
            Sysno::restart_syscall,
            Sysno::exit,
            Sysno::exit_group,
        ]);
        // Memory is never made executable after start-up.
        for call in [Sysno::mmap, Sysno::mprotect] {
            self.allow_when(
                call,
                vec![condition(2, Op::MaskedEq(libc::PROT_EXEC as u64), 0)],
            )?;
        }
        for command in FUTEX_COMMANDS {
            self.allow_when(
                Sysno::futex,
                vec![condition(1, Op::MaskedEq(FUTEX_COMMAND_MASK), command)],
            )?;
        }
        // Debug builds check a descriptor is open before closing it.
        self.allow_when(Sysno::fcntl, vec![eq(1, libc::F_GETFD as u64)])?;
        // musl sets close-on-exec again after an `open` with `O_CLOEXEC` (for kernels that
        // ignored the flag).
        self.allow_when(
            Sysno::fcntl,
            vec![eq(1, libc::F_SETFD as u64), eq(2, libc::FD_CLOEXEC as u64)],
        )?;
        // abort(): SIGABRT back to its default action, then raised.
        self.allow_when(Sysno::rt_sigaction, vec![eq(0, libc::SIGABRT as u64)])?;
        self.allow_signals(&[libc::SIGABRT, libc::SIGSYS])
    }

    /// Starting threads (what the new thread does before its own filter goes on included).
    fn thread_starts(&mut self) -> Result<(), BackendError> {
        self.allow(&[
            Sysno::clone3,
            Sysno::clone,
            Sysno::set_robust_list,
            Sysno::rseq,
            Sysno::sched_getaffinity,
        ]);
        // glibc installs its set-id broadcast handler when the first thread starts.
        self.allow_when(Sysno::rt_sigaction, vec![eq(0, GLIBC_SIGSETXID)])?;
        // The new thread names itself, then reads the name back and installs its own filter.
        for option in [libc::PR_SET_NAME, libc::PR_GET_NAME] {
            self.allow_when(Sysno::prctl, vec![eq(0, option as u64)])?;
        }
        self.allow_when(
            Sysno::prctl,
            vec![eq(0, libc::PR_SET_NO_NEW_PRIVS as u64), eq(1, 1)],
        )?;
        self.allow_when(
            Sysno::seccomp,
            vec![eq(0, libc::SECCOMP_SET_MODE_FILTER as u64), eq(1, 0)],
        )
    }

    /// An epoll loop over eventfds and the back end's descriptors.
    fn io_loop(&mut self) {
        self.allow(&[
            Sysno::epoll_create1,
            Sysno::epoll_ctl,
            Sysno::epoll_wait,
            Sysno::epoll_pwait,
            Sysno::read,
        ]);
    }

    /// A unix socket server whose connections have their own threads.
    fn socket_server(&mut self) -> Result<(), BackendError> {
        self.thread_starts()?;
        self.allow(&[
            Sysno::accept4,
            Sysno::read,
            Sysno::recvfrom,
            Sysno::sendto,
            Sysno::poll,
            Sysno::shutdown,
        ]);
        // `try_clone` of a connection.
        self.allow_when(Sysno::fcntl, vec![eq(1, libc::F_DUPFD_CLOEXEC as u64)])?;
        // Read and write timeouts on connections.
        for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            self.allow_when(
                Sysno::setsockopt,
                vec![eq(1, libc::SOL_SOCKET as u64), eq(2, option as u64)],
            )?;
        }
        Ok(())
    }

    fn vcpu(&mut self) -> Result<(), BackendError> {
        use ioctl::*;
        // KVM_RUN, and the registers and the code at RIP for the crash report.
        self.allow_ioctls(&[KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_TRANSLATE])?;
        // The serial port's output goes to the attached console client (a stream socket: no
        // destination address)...
        self.allow_when(
            Sysno::sendto,
            vec![SeccompCondition::new(4, Len::Qword, Op::Eq, 0)],
        )?;
        // ...and to the console log, which rotates by renaming it and opening a new one (only in
        // the jail's run directory when the VMM is jailed). A client that falls behind is
        // dropped by waking its session thread: a `write` to an eventfd.
        self.allow(&[Sysno::rename]);
        self.allow_when(
            Sysno::openat,
            vec![condition(2, Op::MaskedEq(!0), LOG_OPEN_FLAGS)],
        )?;
        // musl (the static corral-vmm's libc) opens with `open`, its flags one argument earlier
        // and with O_LARGEFILE added (0o100000 on x86_64, where glibc's O_LARGEFILE is 0).
        self.allow_when(
            Sysno::open,
            vec![condition(1, Op::MaskedEq(!0), LOG_OPEN_FLAGS | 0o100000)],
        )
    }

    fn vmm(&mut self) -> Result<(), BackendError> {
        use ioctl::*;
        // It starts the vCPU threads, which inherit this filter before adding theirs.
        self.vcpu()?;
        self.thread_starts()?;
        self.allow_ioctls(&[
            KVM_CREATE_VM,
            KVM_CHECK_EXTENSION,
            KVM_GET_VCPU_MMAP_SIZE,
            KVM_SET_TSS_ADDR,
            KVM_CREATE_IRQCHIP,
            KVM_CREATE_PIT2,
            KVM_SET_USER_MEMORY_REGION,
            KVM_IRQFD,
            KVM_IOEVENTFD,
            KVM_CREATE_VCPU,
            KVM_SET_CPUID2,
            KVM_SET_MSRS,
            KVM_SET_FPU,
            KVM_GET_LAPIC,
            KVM_SET_LAPIC,
            KVM_SET_SREGS,
            KVM_SET_REGS,
            // Snapshots: saved (and restored) by the main thread while the vCPUs are parked.
            KVM_GET_MSRS,
            KVM_GET_CPUID2,
            KVM_GET_MP_STATE,
            KVM_SET_MP_STATE,
            KVM_GET_IRQCHIP,
            KVM_SET_IRQCHIP,
            KVM_GET_CLOCK,
            KVM_SET_CLOCK,
            KVM_GET_PIT2,
            KVM_SET_PIT2,
            KVM_GET_VCPU_EVENTS,
            KVM_SET_VCPU_EVENTS,
            KVM_GET_DEBUGREGS,
            KVM_SET_DEBUGREGS,
            KVM_GET_XSAVE,
            KVM_SET_XSAVE,
            KVM_GET_XCRS,
            KVM_SET_XCRS,
            // Diff snapshots: the pages the guest wrote since the last snapshot.
            KVM_GET_DIRTY_LOG,
        ])?;
        // Stopping vCPUs interrupts KVM_RUN with the kick signal.
        self.allow_signals(&[vmm_sys_util::signal::SIGRTMIN()])?;
        self.allow(&[
            // The kernel and initrd are loaded again from their open files on a restart.
            Sysno::read,
            Sysno::pread64,
            Sysno::lseek,
            // The exit record (a temp file synced and renamed into place) and the sockets'
            // removal.
            Sysno::openat,
            Sysno::mkdir,
            Sysno::fchmod,
            Sysno::fsync,
            Sysno::newfstatat,
            Sysno::statx,
            Sysno::fstat,
            // The same under musl (the static corral-vmm's libc).
            Sysno::open,
            Sysno::stat,
            Sysno::lstat,
            Sysno::unlink,
            // Snapshots: the directory check and the sparse memory file.
            Sysno::getdents64,
            Sysno::pwrite64,
            Sysno::ftruncate,
            // A new snapshot's id.
            Sysno::getrandom,
        ]);
        self.migration_source()?;
        // Its own log's rotation (`StdioLog::rotate_if_full`; the lookups, the rename and the
        // open are above) points stdout and stderr at the new file.
        for stdio in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            self.allow_when(Sysno::dup2, vec![eq(1, stdio as u64)])?;
        }
        Ok(())
    }

    /// Live migration: the main thread connects to the destination (a unix or TCP stream
    /// socket), sends guest memory and state, and reads the answers, with timeouts.
    fn migration_source(&mut self) -> Result<(), BackendError> {
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            self.allow_when(
                Sysno::socket,
                vec![
                    eq(0, family as u64),
                    condition(1, Op::MaskedEq(0xf), libc::SOCK_STREAM as u64),
                ],
            )?;
        }
        self.allow(&[Sysno::connect, Sysno::sendto, Sysno::recvfrom]);
        for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            self.allow_when(
                Sysno::setsockopt,
                vec![eq(1, libc::SOL_SOCKET as u64), eq(2, option as u64)],
            )?;
        }
        self.allow_when(
            Sysno::setsockopt,
            vec![
                eq(1, libc::IPPROTO_TCP as u64),
                eq(2, libc::TCP_NODELAY as u64),
            ],
        )?;
        // The disks' locks handed to the destination, and taken back if it fails.
        for command in [libc::F_OFD_SETLK, libc::F_OFD_GETLK] {
            self.allow_when(Sysno::fcntl, vec![eq(1, command as u64)])?;
        }
        Ok(())
    }

    fn block(&mut self) -> Result<(), BackendError> {
        self.io_loop();
        self.allow(&[
            Sysno::pread64,
            Sysno::pwrite64,
            Sysno::preadv,
            Sysno::pwritev,
            Sysno::lseek,
            Sysno::fsync,
            Sysno::fdatasync,
            // Discard and write-zeroes punch holes in files...
            Sysno::fallocate,
        ]);
        // ...and ask block devices.
        self.allow_ioctls(&[ioctl::BLKDISCARD, ioctl::BLKZEROOUT])
    }

    fn net(&mut self) {
        self.io_loop();
        self.allow(&[Sysno::readv, Sysno::writev]);
    }

    fn rng(&mut self) {
        self.io_loop();
        self.allow(&[Sysno::getrandom]);
    }

    fn vsock(&mut self) -> Result<(), BackendError> {
        self.io_loop();
        // `listen` once, when the guest's driver first starts the device.
        self.allow(&[
            Sysno::accept4,
            Sysno::connect,
            Sysno::listen,
            Sysno::recvfrom,
            Sysno::sendto,
            Sysno::shutdown,
        ]);
        // Connections to the host's `<socket>_<port>` listeners: unix stream sockets only.
        self.allow_when(
            Sysno::socket,
            vec![
                eq(0, libc::AF_UNIX as u64),
                condition(1, Op::MaskedEq(0xf), libc::SOCK_STREAM as u64),
            ],
        )?;
        // Non-blocking mode.
        self.allow_ioctls(&[ioctl::FIONBIO])?;
        for command in [libc::F_GETFL, libc::F_SETFL] {
            self.allow_when(Sysno::fcntl, vec![eq(1, command as u64)])?;
        }
        Ok(())
    }

    fn control(&mut self) -> Result<(), BackendError> {
        self.socket_server()?;
        // `pause` interrupts the vCPUs; `shutdown` starts a timer thread that sleeps.
        self.allow_signals(&[vmm_sys_util::signal::SIGRTMIN()])?;
        self.allow(&[Sysno::clock_nanosleep, Sysno::nanosleep]);
        Ok(())
    }

    fn console(&mut self) -> Result<(), BackendError> {
        // Clients of the console socket, or stdin.
        self.socket_server()?;
        // Each attached client gets a non-blocking socket (the guest never waits for it) and an
        // eventfd that wakes its session thread when output waits for it.
        self.allow(&[Sysno::eventfd2]);
        // Input typed faster than the guest reads it waits for room in the UART's FIFO.
        self.allow(&[Sysno::clock_nanosleep, Sysno::nanosleep]);
        self.allow_ioctls(&[ioctl::FIONBIO])
    }
}

/// The allow list of `class` in the process `pid`.
pub fn for_class(class: ThreadClass, pid: libc::pid_t) -> Result<Rules, BackendError> {
    let mut list = List {
        rules: Rules::new(),
        pid,
    };
    list.base()?;
    match class {
        ThreadClass::Vmm => list.vmm()?,
        ThreadClass::Vcpu => list.vcpu()?,
        ThreadClass::Block => list.block()?,
        ThreadClass::Net => list.net(),
        ThreadClass::Rng => list.rng(),
        ThreadClass::Vsock => list.vsock()?,
        ThreadClass::Control => list.control()?,
        ThreadClass::Console => list.console()?,
    }
    Ok(list.rules)
}

#[cfg(test)]
mod tests {
    use super::ioctl::*;

    #[test]
    fn state_ioctl_numbers_match_the_kernel_headers() {
        // Values from <linux/kvm.h> as compiled for x86_64.
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_SET_XSAVE, 0x5000_aea5);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_SET_IRQCHIP, 0x8208_ae63);
        assert_eq!(KVM_GET_CLOCK, 0x8030_ae7c);
        assert_eq!(KVM_GET_PIT2, 0x8070_ae9f);
        assert_eq!(KVM_GET_VCPU_EVENTS, 0x8040_ae9f);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_GET_CPUID2, 0xc008_ae91);
        assert_eq!(KVM_GET_XCRS, 0x8188_aea6);
        assert_eq!(KVM_GET_DEBUGREGS, 0x8080_aea1);
        assert_eq!(KVM_GET_MP_STATE, 0x8004_ae98);
    }
}
