//! vCPUs: setup for the boot protocol, one thread each running `KVM_RUN`, exit handling, and the
//! run/pause/stop coordination between those threads and the rest of the VMM.
//!
//! A vCPU thread checks its target state before every `KVM_RUN`. To make a thread that is inside
//! `KVM_RUN` look, the coordinator sends it a real-time signal (with an empty handler) which ends
//! the ioctl with `EINTR`. A signal that lands just before the ioctl is missed, so the coordinator
//! repeats it until every thread has acknowledged the new state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::GuestMemoryMmap;

use crate::arch::x86_64::cpuid::{vcpu_cpuid, CpuidPolicy};
use crate::arch::x86_64::msrs::boot_msrs;
use crate::arch::x86_64::regs::{boot_fpu, boot_regs, boot_sregs, BootTablesError, EntryPoint};
use crate::devices::bus::Bus;
use crate::exit::{ExitReason, StopEvent, StopSender};
use crate::seccomp::{self, ThreadClass};
use crate::vstate::vcpu_state::{self, VcpuState, VcpuStateError};

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {index}")]
    Create {
        index: u8,
        source: kvm_ioctls::Error,
    },
    #[error("cannot set up vCPU {index} ({what})")]
    Setup {
        index: u8,
        what: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error("cannot build the boot MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
    #[error("cannot add the CPU topology to the CPUID list: {0:?}")]
    Cpuid(vmm_sys_util::fam::Error),
    #[error("KVM accepted only {set} of the {wanted} boot MSRs of vCPU {index}")]
    Msrs {
        index: u8,
        set: usize,
        wanted: usize,
    },
    #[error(transparent)]
    BootTables(#[from] BootTablesError),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("cannot start the thread of vCPU {index}")]
    Thread { index: u8, source: std::io::Error },
    #[error("the vCPUs did not stop within {0:?}")]
    StopTimeout(Duration),
}

/// What the vCPU threads should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Run,
    Pause,
    Stop,
}

struct ControlState {
    target: Target,
    /// Threads waiting in `Pause`.
    parked: usize,
    /// Threads that have not exited.
    alive: usize,
    /// The kernel thread ids of the vCPU threads (each adds its own as it starts), signalled with
    /// `tgkill` directly: libcs differ in the call behind `pthread_kill` (musl's is `tkill`,
    /// which the filters do not allow, as it can name any thread of the host).
    threads: Vec<libc::pid_t>,
}

/// Shared by the vCPU threads and whoever pauses, resumes or stops them.
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

/// How often a state change is re-signalled to threads that have not acknowledged it.
const KICK_INTERVAL: Duration = Duration::from_millis(5);
/// How long pause/stop wait for all vCPUs before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of the kick signal; without a handler the signal would kill the
/// process. Idempotent.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick)
        .map_err(VcpuError::Signal)
}

impl Default for VcpuControl {
    fn default() -> Self {
        VcpuControl {
            state: Mutex::new(ControlState {
                target: Target::Run,
                parked: 0,
                alive: 0,
                threads: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }
}

impl VcpuControl {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn target(&self) -> Target {
        self.lock().target
    }

    /// Prepares for a new set of threads. They start running, or paused when a pause was asked
    /// for before they existed (a VM started paused, or paused while it was being built).
    fn begin(&self) {
        let mut state = self.lock();
        if state.target == Target::Stop {
            state.target = Target::Run;
        }
        state.parked = 0;
        state.alive = 0;
        state.threads.clear();
    }

    /// Sets `target` and signals the threads until `settled` holds or the timeout passes.
    fn change(
        &self,
        target: Target,
        settled: impl Fn(&ControlState) -> bool,
    ) -> Result<(), VcpuError> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut state = self.lock();
        state.target = target;
        self.changed.notify_all();
        while !settled(&state) {
            if Instant::now() > deadline {
                return Err(VcpuError::StopTimeout(SETTLE_TIMEOUT));
            }
            let pid = std::process::id();
            for &thread in &state.threads {
                // SAFETY: tgkill touches no memory of ours; it reaches only a thread of this
                // process (a vCPU thread that has not been joined: handles are joined only after
                // `alive` reaches 0 and `threads` is cleared), whose kick signal has a no-op
                // handler installed.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, thread, kick_signal()) };
            }
            state = self
                .changed
                .wait_timeout(state, KICK_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// Returns once every vCPU is parked.
    pub fn pause(&self) -> Result<(), VcpuError> {
        self.change(Target::Pause, |s| s.parked == s.alive)
    }

    pub fn resume(&self) {
        let mut state = self.lock();
        if state.target == Target::Pause {
            state.target = Target::Run;
            self.changed.notify_all();
        }
    }

    /// Returns once every vCPU thread has left its loop (they can then be joined).
    pub fn stop(&self) -> Result<(), VcpuError> {
        self.change(Target::Stop, |s| s.alive == 0)?;
        self.lock().threads.clear();
        Ok(())
    }

    /// Adds the calling vCPU thread to those a state change signals.
    fn register_current_thread(&self) {
        let tid = nix::unistd::gettid().as_raw();
        self.lock().threads.push(tid);
    }

    /// Blocks while paused; returns false when the thread must exit.
    fn wait_until_runnable(&self) -> bool {
        self.park_while(|target| target == Target::Pause) == Target::Run
    }

    /// After a vCPU reported a stop event: idle until the VMM stops all vCPUs.
    fn wait_for_stop(&self) {
        self.park_while(|target| target != Target::Stop);
    }

    /// Waits, counted as parked (so a pause does not wait for this thread), while `parked(target)`
    /// holds; on `Stop` the thread is counted out. Returns the target that ended the wait.
    fn park_while(&self, parked: impl Fn(Target) -> bool) -> Target {
        let mut state = self.lock();
        while parked(state.target) {
            state.parked += 1;
            self.changed.notify_all();
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.parked -= 1;
        }
        if state.target == Target::Stop {
            state.alive -= 1;
            self.changed.notify_all();
        }
        state.target
    }
}

/// VM exit counts by kind, for `info`.
#[derive(Default)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub unknown_io: AtomicU64,
    pub interrupted: AtomicU64,
    pub hlt: AtomicU64,
    pub other: AtomicU64,
}

impl ExitCounters {
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        [
            ("exits_io_in", &self.io_in),
            ("exits_io_out", &self.io_out),
            ("exits_mmio_read", &self.mmio_read),
            ("exits_mmio_write", &self.mmio_write),
            ("exits_unknown_io", &self.unknown_io),
            ("exits_interrupted", &self.interrupted),
            ("exits_hlt", &self.hlt),
            ("exits_other", &self.other),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.load(Ordering::Relaxed)))
        .collect()
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What every vCPU thread shares.
pub struct VcpuContext {
    pub pio_bus: Arc<Bus>,
    pub mmio_bus: Arc<Bus>,
    pub control: Arc<VcpuControl>,
    pub counters: Arc<ExitCounters>,
    pub stop: StopSender,
    pub memory: GuestMemoryMmap,
}

pub struct Vcpu {
    fd: VcpuFd,
    index: u8,
}

/// What to do after one `KVM_RUN`.
enum Next {
    Continue,
    Stop(StopEvent),
    Crash(String),
}

impl Vcpu {
    pub fn new(vm: &VmFd, index: u8) -> Result<Vcpu, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Create { index, source })?;
        Ok(Vcpu { fd, index })
    }

    fn setup_error(&self, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VcpuError {
        let index = self.index;
        move |source| VcpuError::Setup {
            index,
            what,
            source,
        }
    }

    /// CPUID, MSRs, FPU and local APIC for every vCPU; registers and descriptor tables for the
    /// boot vCPU (the others wait for the guest's INIT/SIPI).
    pub fn configure(
        &self,
        supported_cpuid: &CpuId,
        policy: CpuidPolicy,
        memory: &GuestMemoryMmap,
        entry: EntryPoint,
    ) -> Result<(), VcpuError> {
        let cpuid = vcpu_cpuid(supported_cpuid, self.index, policy).map_err(VcpuError::Cpuid)?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.setup_error("CPUID"))?;
        let msrs = boot_msrs().map_err(VcpuError::MsrList)?;
        let set = self.fd.set_msrs(&msrs).map_err(self.setup_error("MSRs"))?;
        if set != msrs.as_slice().len() {
            return Err(VcpuError::Msrs {
                index: self.index,
                set,
                wanted: msrs.as_slice().len(),
            });
        }
        self.fd
            .set_fpu(&boot_fpu())
            .map_err(self.setup_error("FPU"))?;
        self.set_lint()?;
        if self.index == 0 {
            let sregs = self.fd.get_sregs().map_err(self.setup_error("sregs"))?;
            let sregs = boot_sregs(memory, entry, sregs)?;
            self.fd
                .set_sregs(&sregs)
                .map_err(self.setup_error("sregs"))?;
            self.fd
                .set_regs(&boot_regs(entry))
                .map_err(self.setup_error("registers"))?;
        }
        Ok(())
    }

    /// LINT0 delivers ExtINT (the PIC) and LINT1 NMI, as firmware leaves them.
    fn set_lint(&self) -> Result<(), VcpuError> {
        const APIC_LVT0: usize = 0x350;
        const APIC_LVT1: usize = 0x360;
        const DELIVERY_EXTINT: u32 = 0x7 << 8;
        const DELIVERY_NMI: u32 = 0x4 << 8;
        const DELIVERY_MASK: u32 = 0x7 << 8;
        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(self.setup_error("local APIC"))?;
        for (offset, mode) in [(APIC_LVT0, DELIVERY_EXTINT), (APIC_LVT1, DELIVERY_NMI)] {
            let bytes = &mut lapic.regs[offset..offset + 4];
            let raw: [u8; 4] = [
                bytes[0] as u8,
                bytes[1] as u8,
                bytes[2] as u8,
                bytes[3] as u8,
            ];
            let value = (u32::from_le_bytes(raw) & !DELIVERY_MASK) | mode;
            for (slot, byte) in bytes.iter_mut().zip(value.to_le_bytes()) {
                *slot = byte as libc::c_char;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(self.setup_error("local APIC"))
    }

    /// Reads this vCPU's complete state; its thread must be parked (the VM paused).
    pub fn save_state(&mut self, msr_indices: &[u32]) -> Result<VcpuState, VcpuStateError> {
        vcpu_state::save(&mut self.fd, self.index, msr_indices)
    }

    /// Writes a saved state into this fresh vCPU, instead of [`Vcpu::configure`].
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), VcpuStateError> {
        vcpu_state::restore(&self.fd, self.index, state)
    }

    fn run_once(&mut self, context: &VcpuContext) -> Next {
        let counters = &context.counters;
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {
                count(&counters.interrupted);
                return Next::Continue;
            }
            Err(err) => return Next::Crash(format!("KVM_RUN failed: {err}")),
        };
        match exit {
            VcpuExit::IoIn(port, data) => {
                count(&counters.io_in);
                if !context.pio_bus.read(u64::from(port), data) {
                    count(&counters.unknown_io);
                }
                Next::Continue
            }
            VcpuExit::IoOut(port, data) => {
                count(&counters.io_out);
                if !context.pio_bus.write(u64::from(port), data) {
                    count(&counters.unknown_io);
                }
                Next::Continue
            }
            VcpuExit::MmioRead(address, data) => {
                count(&counters.mmio_read);
                if !context.mmio_bus.read(address, data) {
                    count(&counters.unknown_io);
                }
                Next::Continue
            }
            VcpuExit::MmioWrite(address, data) => {
                count(&counters.mmio_write);
                if !context.mmio_bus.write(address, data) {
                    count(&counters.unknown_io);
                }
                Next::Continue
            }
            VcpuExit::Hlt => {
                // With the in-kernel irqchip KVM handles HLT itself; seeing it means nothing
                // can wake this vCPU again.
                count(&counters.hlt);
                Next::Crash("halted with no way to wake up (HLT exit)".into())
            }
            VcpuExit::Intr => {
                count(&counters.interrupted);
                Next::Continue
            }
            VcpuExit::Shutdown => Next::Crash("triple fault (KVM_EXIT_SHUTDOWN)".into()),
            VcpuExit::SystemEvent(kind, _) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Next::Stop(StopEvent::new(
                    ExitReason::Poweroff,
                    "the guest powered off",
                )),
                KVM_SYSTEM_EVENT_RESET => Next::Stop(StopEvent::new(
                    ExitReason::Reboot,
                    "the guest reset the system",
                )),
                KVM_SYSTEM_EVENT_CRASH => Next::Crash("the guest reported a crash".into()),
                other => {
                    count(&counters.other);
                    tracing::warn!("ignoring KVM system event {other}");
                    Next::Continue
                }
            },
            VcpuExit::InternalError => {
                let run = self.fd.get_kvm_run();
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
                // member KVM filled in.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                let words = (internal.ndata as usize).min(internal.data.len());
                Next::Crash(format!(
                    "KVM internal error, suberror {} (1 = instruction emulation failed), \
                     data {:x?}",
                    internal.suberror,
                    &internal.data[..words]
                ))
            }
            VcpuExit::FailEntry(reason, cpu) => Next::Crash(format!(
                "VM entry failed on host CPU {cpu}, hardware reason {reason:#x}"
            )),
            other => {
                count(&counters.other);
                Next::Crash(format!("unexpected VM exit {other:?}"))
            }
        }
    }

    /// Registers and the bytes at RIP, for the crash log.
    fn dump_state(&self, memory: &GuestMemoryMmap) -> String {
        let (Ok(regs), Ok(sregs)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            return "registers unavailable".into();
        };
        let mut code = [0u8; 16];
        let code_text = self
            .fd
            .translate_gva(sregs.cs.base.wrapping_add(regs.rip))
            .ok()
            .filter(|t| t.valid != 0)
            .and_then(|t| {
                memory
                    .read_slice(&mut code, GuestAddress(t.physical_address))
                    .ok()
            })
            .map(|()| format!("{code:02x?}"))
            .unwrap_or_else(|| "unreadable".into());
        format!(
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
             rsi={:#x} rdi={:#x} rbp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} \
             cs={:#x} (l={} db={}) code at rip: {code_text}",
            regs.rip,
            regs.rsp,
            regs.rflags,
            regs.rax,
            regs.rbx,
            regs.rcx,
            regs.rdx,
            regs.rsi,
            regs.rdi,
            regs.rbp,
            sregs.cr0,
            sregs.cr2,
            sregs.cr3,
            sregs.cr4,
            sregs.efer,
            sregs.cs.selector,
            sregs.cs.l,
            sregs.cs.db,
        )
    }
}

/// A vCPU shared by its thread, which holds the lock while in `KVM_RUN`, and the main thread,
/// which takes it while the VM is paused (to save the vCPU's state).
pub type SharedVcpu = Arc<Mutex<Vcpu>>;

/// Starts the vCPU's thread.
fn spawn(
    vcpu: SharedVcpu,
    context: Arc<VcpuContext>,
) -> Result<std::thread::JoinHandle<()>, VcpuError> {
    let index = lock_vcpu(&vcpu).index;
    let control = context.control.clone();
    control.lock().alive += 1;
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || run(&vcpu, &context))
        .map_err(|source| {
            control.lock().alive -= 1;
            VcpuError::Thread { index, source }
        })
}

pub fn lock_vcpu(vcpu: &SharedVcpu) -> MutexGuard<'_, Vcpu> {
    vcpu.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A vCPU thread: runs the vCPU while allowed to, until it stops the VM or is stopped.
fn run(shared: &SharedVcpu, context: &VcpuContext) {
    // Before it first looks at the target: a change made earlier finds it parked or gone.
    context.control.register_current_thread();
    seccomp::enter(ThreadClass::Vcpu);
    while context.control.wait_until_runnable() {
        let mut vcpu = lock_vcpu(shared);
        let event = match vcpu.run_once(context) {
            Next::Continue => continue,
            Next::Stop(event) => event,
            Next::Crash(what) => {
                // The main thread logs it (rate-limited: a crash loop repeats it).
                let dump = vcpu.dump_state(&context.memory);
                StopEvent::new(
                    ExitReason::Crashed,
                    format!("vCPU {}: {what}; {dump}", vcpu.index),
                )
            }
        };
        drop(vcpu);
        context.stop.send(event);
        context.control.wait_for_stop();
        return;
    }
}

/// Starts one thread per vCPU and returns their handles. If a thread cannot be started, the
/// ones already running are stopped and joined before the error is returned.
pub fn start_all(
    vcpus: &[SharedVcpu],
    context: &Arc<VcpuContext>,
) -> Result<Vec<std::thread::JoinHandle<()>>, VcpuError> {
    context.control.begin();
    let mut handles = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match spawn(vcpu.clone(), context.clone()) {
            Ok(handle) => handles.push(handle),
            Err(err) => {
                stop_all(&context.control, handles)?;
                return Err(err);
            }
        }
    }
    Ok(handles)
}

/// Stops the vCPU threads and joins them.
pub fn stop_all(
    control: &VcpuControl,
    handles: Vec<std::thread::JoinHandle<()>>,
) -> Result<(), VcpuError> {
    control.stop()?;
    for handle in handles {
        // A vCPU thread that panicked has nothing left to clean up; the VM is going away.
        let _ = handle.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads that behave like vCPU loops (without KVM): count while allowed to run.
    fn fake_vcpus(
        control: &Arc<VcpuControl>,
        count: usize,
    ) -> (Arc<AtomicU64>, Vec<std::thread::JoinHandle<()>>) {
        let steps = Arc::new(AtomicU64::new(0));
        control.begin();
        control.lock().alive = count;
        let handles = (0..count)
            .map(|_| {
                let (control, steps) = (control.clone(), steps.clone());
                std::thread::spawn(move || {
                    while control.wait_until_runnable() {
                        steps.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        (steps, handles)
    }

    #[test]
    fn pause_parks_every_thread_until_resume_and_stop_ends_them() {
        let control = Arc::new(VcpuControl::default());
        let (steps, handles) = fake_vcpus(&control, 3);
        std::thread::sleep(Duration::from_millis(20));

        control.pause().unwrap();
        assert_eq!(control.target(), Target::Pause);
        let frozen = steps.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            steps.load(Ordering::SeqCst),
            frozen,
            "a thread ran while paused"
        );

        control.resume();
        let deadline = Instant::now() + Duration::from_secs(10);
        while steps.load(Ordering::SeqCst) == frozen {
            assert!(Instant::now() < deadline, "threads did not resume");
            std::thread::sleep(Duration::from_millis(1));
        }

        stop_all(&control, handles).unwrap();
        assert_eq!(control.lock().alive, 0);
    }
}
