//! Running one VM: check the configuration, build the VM, run its vCPUs, and act on how the guest
//! stops (exit, or restart in the same process), as `corral vmm run` does.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_control::log::{Allowed, RateLimit, StdioLog, DEFAULT_LOG_LIMIT};
use corral_control::restart::{monotonic_now, Restarts, Verdict};

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::acpi::{self, AcpiTooLarge};
use crate::arch::x86_64::cpuid::{host_kvm_emulates_kernel_code, CpuidPolicy};
use crate::arch::x86_64::layout::{ACPI_START, MPTABLE_START};
use crate::arch::x86_64::regs::EntryPoint;
use crate::arch::x86_64::InitrdPlacement;
use crate::arch::x86_64::{
    low_ram_end, mptable, write_pvh_start_info, write_rng_seed, write_zero_page, RNG_SEED_BYTES,
};
use crate::config::{Action, ConfigError, VmConfig};
use crate::console::{Console, ConsoleError, SocketFiles};
use crate::control::{self, Runtime};
use crate::devices::{
    open_virtio_devices, virtio_slots, DeviceError, DeviceManager, DiskLocks, OpenedDevices,
};
use crate::exit::{ExitReason, StopEvent, StopSender, VmmEvent};
use crate::jail::{self, JailConfig, JailError};
use crate::kernel::{place_initrd, write_cmdline, Initrd, KernelError, KernelImage};
use crate::migration::destination::Incoming;
use crate::migration::{self, Address, MigrateRequest, MigrationError};
use crate::seccomp::{self, SeccompError, ThreadClass};
use crate::snapshot::memory::Pages;
use crate::snapshot::{self, SavedVm, Snapshot, SnapshotError, SnapshotKind, SnapshotRequest};
use crate::vstate::memory;
use crate::vstate::vcpu::{
    self, install_kick_handler, lock_vcpu, SharedVcpu, Vcpu, VcpuContext, VcpuError,
};
use crate::vstate::vcpu_state::{self, VcpuStateError};
use crate::vstate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open /dev/kvm (is KVM available, and may this user use it?)")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error("{asked} vCPUs asked for, but this host's KVM allows at most {max}")]
    TooManyVcpus { asked: u8, max: usize },
    #[error("cannot read the CPUID KVM supports")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableTooLarge),
    #[error("control socket")]
    Control(#[from] corral_control::ControlError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot write the boot information")]
    BootInfo(#[from] linux_loader::configurator::Error),
    #[error(transparent)]
    Acpi(#[from] AcpiTooLarge),
    #[error("cannot draw the guest's random seed from the host (getrandom)")]
    RngSeed(#[source] getrandom::Error),
    #[error("cannot write the {0} into guest memory: {1}")]
    WriteTables(&'static str, vm_memory::GuestMemoryError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Jail(#[from] JailError),
    #[error("cannot start a VMM thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    VcpuState(#[from] VcpuStateError),
    #[error("cannot restore the snapshot")]
    Restore(#[source] SnapshotError),
    #[error("cannot tell the migration source that the VM runs here; stopped it so that it runs only there")]
    MigrationAck(#[source] migration::protocol::ProtocolError),
}

/// How the VMM process runs, beyond the machine its configuration describes.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Confine the process (see [`crate::jail`]); the config's paths must be placed in it.
    pub jail: Option<JailConfig>,
    /// Test-only: map the forbidden-call port ([`crate::devices::legacy::forbidden_call`]).
    pub forbidden_call_port: bool,
    /// The file stdout and stderr point at (the caller opened it), which the main thread rotates
    /// at [`DEFAULT_LOG_LIMIT`] bytes; in the jail directory when jailed.
    pub log_file: Option<PathBuf>,
    /// Start with the vCPUs paused (a `resume` on the control socket starts them).
    pub start_paused: bool,
}

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmExit {
    pub reason: ExitReason,
    /// The byte the guest wrote to the debug-exit port, if it stopped that way.
    pub guest_code: Option<u8>,
    pub detail: String,
    /// Guest restarts (per the `on_*` actions) before this exit.
    pub restarts: u64,
    /// The policy said to restart once more, past the restart limit: the VM ended instead.
    pub restart_limited: bool,
}

impl VmExit {
    fn new(event: StopEvent, restarts: u64, restart_limited: bool) -> VmExit {
        VmExit {
            reason: event.reason,
            guest_code: event.guest_code,
            detail: event.detail,
            restarts,
            restart_limited,
        }
    }

    /// The VMM process's exit status: 0 for a power-off, the guest's byte for a debug-exit write,
    /// 3 after a reboot, 4 after a crash, 5 when killed, 6 at the restart limit (see docs/vmm.md).
    pub fn exit_status(&self) -> u8 {
        if self.restart_limited {
            return 6;
        }
        match self.reason {
            ExitReason::Poweroff => self.guest_code.unwrap_or(0),
            ExitReason::Reboot => 3,
            ExitReason::Crashed => 4,
            ExitReason::Killed => 5,
            ExitReason::Migrated => 0,
        }
    }
}

/// Everything checked and opened before the first boot.
struct Prepared {
    kvm: Kvm,
    kernel: KernelImage,
    initrd: Option<Initrd>,
    initrd_placement: Option<InitrdPlacement>,
    cpuid: kvm_bindings::CpuId,
    policy: CpuidPolicy,
    mptable: Vec<u8>,
    acpi_tables: Vec<u8>,
    /// The configured command line plus the virtio device announcements.
    cmdline: String,
    /// The MSRs a snapshot saves (KVM's list, read before the seccomp filters forbid it).
    msrs_to_save: Vec<u32>,
}

fn prepare(config: &VmConfig) -> Result<Prepared, VmmError> {
    config.validate()?;
    let kernel = KernelImage::open(&config.kernel)?;
    let mut cmdline = config.cmdline.clone();
    let slots = virtio_slots(config.virtio_device_count()).map_err(DeviceError::from)?;
    for slot in &slots {
        cmdline.push(' ');
        cmdline.push_str(&slot.cmdline_entry());
    }
    crate::config::check_cmdline(&cmdline, kernel.info.max_cmdline)
        .map_err(KernelError::Cmdline)?;
    let initrd = config.initrd.as_deref().map(Initrd::open).transpose()?;
    let initrd_size = initrd.as_ref().map_or(0, |initrd| initrd.size);
    let initrd_placement = place_initrd(
        &kernel.info,
        initrd_size,
        config.memory,
        low_ram_end(config.memory.0),
    )?;
    let kvm = Kvm::new().map_err(VmmError::Kvm)?;
    let max = kvm.get_max_vcpus();
    if usize::from(config.vcpus) > max {
        return Err(VmmError::TooManyVcpus {
            asked: config.vcpus,
            max,
        });
    }
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VmmError::Cpuid)?;
    let policy = CpuidPolicy {
        vcpu_count: config.vcpus,
        hide_unemulated: host_kvm_emulates_kernel_code(),
    };
    let mptable = mptable::build(MPTABLE_START, config.vcpus)?;
    let acpi_tables = acpi::build(config.vcpus, &slots)?;
    let msrs_to_save = vcpu_state::msrs_to_save(&kvm)?;
    Ok(Prepared {
        kvm,
        kernel,
        initrd,
        initrd_placement,
        cpuid,
        policy,
        mptable,
        acpi_tables,
        cmdline,
        msrs_to_save,
    })
}

/// Builds a fresh VM with the kernel loaded and its vCPUs configured, ready to start.
fn build_vm(
    config: &VmConfig,
    prepared: &mut Prepared,
    devices: &DeviceManager,
) -> Result<(Vm, Vec<SharedVcpu>), VmmError> {
    let vm = Vm::new(&prepared.kvm, config.memory.0, config.track_dirty_pages)?;
    let (entry, setup_header) = prepared.kernel.load(&vm.memory)?;
    if let (Some(initrd), Some(placement)) = (&mut prepared.initrd, prepared.initrd_placement) {
        initrd.load(&vm.memory, placement)?;
    }
    write_cmdline(&vm.memory, &prepared.cmdline, &prepared.kernel.info)?;
    match entry {
        EntryPoint::Pvh(_) => {
            write_pvh_start_info(&vm.memory, config.memory.0, prepared.initrd_placement)?
        }
        EntryPoint::Linux64(_) => {
            let mut seed = [0u8; RNG_SEED_BYTES];
            getrandom::fill(&mut seed).map_err(VmmError::RngSeed)?;
            let setup_data = write_rng_seed(&vm.memory, &seed)
                .map_err(|err| VmmError::WriteTables("random seed", err))?;
            write_zero_page(
                &vm.memory,
                config.memory.0,
                setup_header,
                prepared.cmdline.len(),
                prepared.initrd_placement,
                setup_data,
            )?
        }
    }
    // Both descriptions of the machine: the MP table for guests without ACPI, ACPI for the rest.
    vm.memory
        .write_slice(&prepared.mptable, GuestAddress(MPTABLE_START))
        .map_err(|err| VmmError::WriteTables("MP table", err))?;
    vm.memory
        .write_slice(&prepared.acpi_tables, GuestAddress(ACPI_START))
        .map_err(|err| VmmError::WriteTables("ACPI tables", err))?;
    devices.write_vm_generation_id(&vm.memory)?;
    devices.attach(&vm.fd, &vm.memory)?;
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    for index in 0..config.vcpus {
        let vcpu = Vcpu::new(&vm.fd, index)?;
        vcpu.configure(&prepared.cpuid, prepared.policy, &vm.memory, entry)?;
        vcpus.push(Arc::new(Mutex::new(vcpu)));
    }
    tracing::info!(
        "booting {} with {} vCPUs and {} through {entry:?}",
        config.kernel.display(),
        config.vcpus,
        config.memory
    );
    Ok((vm, vcpus))
}

/// Builds the VM a snapshot describes: memory from its file, then the VM-wide state, the
/// vCPUs and the devices (Firecracker's order: vCPUs exist before the irqchip state is set; the
/// devices last, as their I/O threads may raise interrupts at once). A copy of the VM (`fork`:
/// restored from a snapshot file, not migrated) gets a new VM generation ID.
fn build_restored(
    config: &VmConfig,
    prepared: &Prepared,
    devices: &DeviceManager,
    saved: SavedVm,
    fork: bool,
) -> Result<(Vm, Vec<SharedVcpu>), SnapshotError> {
    let SavedVm {
        snapshot,
        memory: memory_file,
        memory_path,
        map_memory,
    } = saved;
    if snapshot.vcpus.len() != usize::from(config.vcpus) {
        return Err(SnapshotError::VcpuCount {
            path: memory_path,
            found: snapshot.vcpus.len(),
            vcpus: config.vcpus,
        });
    }
    let vm = if map_memory {
        snapshot::memory::check_size(&memory_file, &memory_path, config.memory.0)?;
        let memory = memory::map_file(memory_file, config.memory.0, config.track_dirty_pages)
            .map_err(VmError::from)?;
        Vm::with_memory(&prepared.kvm, memory)?
    } else {
        let vm = Vm::new(&prepared.kvm, config.memory.0, config.track_dirty_pages)?;
        snapshot::memory::load(&memory_file, &memory_path, &vm.memory)?;
        vm
    };
    // Memory now is the snapshot's: the next diff holds what changes from here.
    memory::clear_own_writes(&vm.memory);
    devices.attach(&vm.fd, &vm.memory)?;
    vcpu_state::check_xsave_size(&vm.fd)?;
    let vcpus = (0..config.vcpus)
        .map(|index| Vcpu::new(&vm.fd, index))
        .collect::<Result<Vec<_>, _>>()?;
    vm.restore_state(&snapshot.vm)?;
    for (vcpu, state) in vcpus.iter().zip(&snapshot.vcpus) {
        vcpu.restore_state(state)?;
    }
    devices.restore_state(&snapshot.devices)?;
    if fork {
        devices.fork_vm_generation(&vm.memory)?;
    }
    tracing::info!(
        "restored a VM with {} vCPUs and {} from {}",
        config.vcpus,
        config.memory,
        memory_path.display()
    );
    Ok((
        vm,
        vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect(),
    ))
}

/// The running guest: its VM and vCPUs, and the snapshot its memory was last saved to or
/// restored from (a diff's base; always `None` without dirty tracking).
struct Running<'a> {
    vm: &'a Vm,
    vcpus: &'a [SharedVcpu],
    base: Option<u64>,
}

/// The state of the running VM, with the vCPUs paused (they stay paused) and the devices' I/O
/// threads paused (the caller resumes them with `devices.resume_io`).
fn capture(
    kind: SnapshotKind,
    config: &VmConfig,
    prepared: &Prepared,
    running: &Running<'_>,
    devices: &DeviceManager,
) -> Result<Snapshot, SnapshotError> {
    vcpu_state::check_xsave_size(&running.vm.fd)?;
    let devices = devices.save_state();
    let vcpus = running
        .vcpus
        .iter()
        .map(|vcpu| lock_vcpu(vcpu).save_state(&prepared.msrs_to_save))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        id: snapshot::new_id()?,
        kind,
        config: config.clone(),
        vm: running.vm.save_state()?,
        vcpus,
        devices,
    })
}

/// Migrates the running VM as `request` asks; on any failure the VM goes on here as it was.
/// Once paused for the last pass, the VM's disks are flushed and their locks released, so
/// that the destination can open them (on shared storage); a failure takes them back.
fn migrate(
    request: &MigrateRequest,
    config: &VmConfig,
    prepared: &Prepared,
    running: &mut Running<'_>,
    (devices, disk_locks): (&DeviceManager, &DiskLocks),
    runtime: &Runtime,
    jailed: bool,
) -> Result<corral_control::MigrationReport, MigrationError> {
    let params = &request.params;
    if jailed && matches!(params.to, Address::Tcp(_)) {
        return Err(MigrationError::JailedTcp {
            to: params.to.clone(),
        });
    }
    let control = &runtime.vcpu_control;
    let was_paused = control.target() == vcpu::Target::Pause;
    let mut devices_paused = false;
    let mut locks_released = false;
    let result = migration::source::migrate(params, config, running.vm, &runtime.migration, || {
        control.pause()?;
        devices_paused = true;
        // Pausing the I/O threads flushed the disks.
        let snapshot = capture(SnapshotKind::Full, config, prepared, running, devices)?;
        disk_locks.release()?;
        locks_released = true;
        Ok(snapshot)
    });
    // The pages sent are no longer in the dirty log: a later diff has no base to follow.
    running.base = None;
    if result.is_err() {
        if locks_released {
            disk_locks.retake();
        }
        if devices_paused {
            devices.resume_io();
        }
        if !was_paused {
            control.resume();
        }
    }
    result
}

/// Saves the running VM into `request.dir`: pauses the vCPUs, saves, and resumes them unless
/// asked not to (or they were paused before).
fn take_snapshot(
    request: &SnapshotRequest,
    config: &VmConfig,
    prepared: &Prepared,
    running: &mut Running<'_>,
    devices: &DeviceManager,
    runtime: &Runtime,
) -> Result<(), SnapshotError> {
    let kind = match (request.diff, running.base) {
        (false, _) => SnapshotKind::Full,
        (true, _) if !config.track_dirty_pages => return Err(SnapshotError::NotTracking),
        (true, None) => return Err(SnapshotError::NoBase),
        (true, Some(base)) => SnapshotKind::Diff { base },
    };
    let vm = running.vm;
    let control = &runtime.vcpu_control;
    let was_paused = control.target() == vcpu::Target::Pause;
    control.pause()?;
    let result = (|| {
        snapshot::prepare_dir(&request.dir)?;
        let written = capture(kind, config, prepared, running, devices)
            .and_then(|snapshot| save_memory(&request.dir, &snapshot, vm).map(|()| snapshot.id));
        // Guest memory is saved (or will not be): the I/O threads may touch it again.
        devices.resume_io();
        written
    })();
    // A failed snapshot leaves the VM as it was.
    if !was_paused && (result.is_err() || !request.leave_paused) {
        control.resume();
    }
    if config.track_dirty_pages {
        if let Ok(id) = result {
            running.base = Some(id);
        }
    }
    result.map(drop)
}

/// Writes `snapshot` with guest memory (all of it, or for a diff the pages written since its
/// base) while nothing runs that writes guest memory. With tracking on, the dirty pages are
/// taken (and so reset) by every snapshot, and given back if it fails.
fn save_memory(dir: &Path, snapshot: &Snapshot, vm: &Vm) -> Result<(), SnapshotError> {
    if !snapshot.config.track_dirty_pages {
        return snapshot::write(dir, snapshot, &vm.memory, Pages::NonZero);
    }
    let dirty = memory::take_dirty_pages(&vm.fd, &vm.memory).map_err(VmError::from)?;
    let pages = match snapshot.kind {
        SnapshotKind::Full => Pages::NonZero,
        SnapshotKind::Diff { .. } => Pages::Dirty(&dirty),
    };
    let written = snapshot::write(dir, snapshot, &vm.memory, pages);
    if written.is_err() {
        dirty.give_back(&vm.memory);
    }
    written
}

/// Runs the VM described by `config` until it stops for good.
///
/// Everything on the host is opened first (kernel, initrd, KVM, disks, taps, sockets, the
/// console); then the process enters its jail (`options.jail`), the threads start, each
/// confined by its seccomp filter (`config.seccomp`), and the main thread confines itself
/// before the first boot.
pub fn run(config: &VmConfig, options: &RunOptions) -> Result<VmExit, VmmError> {
    run_vm(config, options, None, None)
}

/// Runs the VM saved in `saved` (opened with [`SavedVm::open`]) until it stops for good, as
/// [`run`] does. `config` is the snapshot's, with only host-side settings (console, sockets)
/// changed; a guest reboot boots its kernel afresh.
pub fn restore(
    config: &VmConfig,
    options: &RunOptions,
    saved: SavedVm,
) -> Result<VmExit, VmmError> {
    run_vm(config, options, Some(saved), None)
}

/// Runs the VM received from a migration source ([`migration::destination::receive`]) as
/// [`restore`] does, and tells the source once its vCPUs run.
pub fn restore_incoming(
    config: &VmConfig,
    options: &RunOptions,
    incoming: Incoming,
) -> Result<VmExit, VmmError> {
    let (saved, ack) = incoming.into_parts();
    run_vm(config, options, Some(saved), Some(ack))
}

fn run_vm(
    config: &VmConfig,
    options: &RunOptions,
    mut restore: Option<SavedVm>,
    mut migration_ack: Option<migration::destination::Ack>,
) -> Result<VmExit, VmmError> {
    let config = &config.with_chosen_macs();
    // A migrated VM's memory and connection were received before: the jail keeps them open. A
    // snapshot's memory file is opened again (by path, inside the jail).
    let keep: Vec<RawFd> = match (&restore, &migration_ack) {
        (Some(saved), Some(ack)) => vec![saved.memory.as_raw_fd(), ack.as_raw_fd()],
        _ => Vec::new(),
    };
    let jail = match &options.jail {
        Some(config) => Some(jail::prepare(config, &keep)?),
        None => None,
    };
    if let (Some(_), Some(saved), None) = (&jail, restore.as_mut(), &migration_ack) {
        saved.reopen_memory().map_err(VmmError::Restore)?;
    }
    if config.seccomp {
        seccomp::prepare()?;
    }
    let mut prepared = prepare(config)?;

    let mut sockets = SocketFiles::default();
    // Opened first so that a missing disk or tap fails before anything else is set up.
    let OpenedDevices {
        devices: virtio_devices,
        disk_locks,
        disk_counters,
    } = open_virtio_devices(config)?;
    if let Some(vsock) = &config.vsock {
        sockets.0.push(vsock.socket.clone());
    }
    let control_listener = match &config.control_socket {
        Some(path) => {
            let listener = corral_control::bind(path)?;
            sockets.0.push(path.clone());
            Some(listener)
        }
        None => None,
    };
    let console = Console::open(&config.serial, config.console_log.as_deref())?;
    if let crate::config::SerialTarget::Socket(path) = &config.serial {
        sockets.0.push(path.clone());
    }

    if let Some(jail) = jail {
        jail.enter()?;
    }

    let (sender, events) = mpsc::channel::<VmmEvent>();
    let stop = StopSender::new(sender.clone());
    let devices = DeviceManager::new(
        console.output(),
        stop.clone(),
        virtio_devices,
        options.forbidden_call_port,
    )?;
    devices.start_workers()?;
    console
        .start_input(devices.serial.clone())
        .map_err(VmmError::Thread)?;
    install_kick_handler()?;

    let runtime = Arc::new(Runtime::new(
        stop.clone(),
        sender,
        devices.i8042.clone(),
        config.vcpus,
        config.memory.0,
        disk_counters,
    ));
    if options.start_paused {
        // Before the control socket answers, so that it reports the VM paused from the start
        // and a `resume` sent before the vCPUs exist is not lost.
        runtime.vcpu_control.pause()?;
    }
    if let Some(listener) = control_listener {
        control::serve(listener, runtime.clone()).map_err(VmmError::Thread)?;
    }
    seccomp::apply(ThreadClass::Vmm)?;

    let mut log = OwnLog(
        options
            .log_file
            .as_ref()
            .map(|path| StdioLog::new(path, DEFAULT_LOG_LIMIT)),
    );
    let mut restarts = 0;
    let mut history = Restarts::default();
    let mut crash_reports = RateLimit::new(CRASH_REPORTS_PER_MINUTE, Duration::from_secs(60));
    loop {
        let (vm, vcpus, base) = match restore.take() {
            Some(saved) => {
                let id = saved.snapshot.id;
                let fork = migration_ack.is_none();
                let (vm, vcpus) = build_restored(config, &prepared, &devices, saved, fork)
                    .map_err(VmmError::Restore)?;
                (vm, vcpus, Some(id))
            }
            None => {
                let (vm, vcpus) = build_vm(config, &mut prepared, &devices)?;
                (vm, vcpus, None)
            }
        };
        devices.resume_io();
        let mut running = Running {
            vm: &vm,
            vcpus: &vcpus,
            base: base.filter(|_| config.track_dirty_pages),
        };
        let context = Arc::new(VcpuContext {
            pio_bus: devices.pio_bus.clone(),
            mmio_bus: devices.mmio_bus.clone(),
            control: runtime.vcpu_control.clone(),
            counters: runtime.counters.clone(),
            stop: stop.clone(),
            memory: vm.memory.clone(),
        });
        runtime.boot_started();
        let booted = Instant::now();
        let handles = vcpu::start_all(&vcpus, &context)?;
        if let Some(ack) = migration_ack.take() {
            if let Err(err) = ack.confirm_running() {
                // The source did not hear it and runs the VM on: it must not run twice.
                vcpu::stop_all(&runtime.vcpu_control, handles)?;
                return Err(VmmError::MigrationAck(err));
            }
        }
        // `runtime` holds a sender, so the channel never disconnects while we wait.
        let mut event = loop {
            match next_event(&events, None, &mut log) {
                Some(VmmEvent::Stop(event)) => break event,
                Some(VmmEvent::Snapshot(request)) => {
                    let result = take_snapshot(
                        &request,
                        config,
                        &prepared,
                        &mut running,
                        &devices,
                        &runtime,
                    );
                    let _ = request.reply.send(result);
                }
                Some(VmmEvent::Migrate(request)) => {
                    let result = migrate(
                        &request,
                        config,
                        &prepared,
                        &mut running,
                        (&devices, &disk_locks),
                        &runtime,
                        options.jail.is_some(),
                    );
                    let migrated = result.is_ok();
                    let _ = request.reply.send(result);
                    if migrated {
                        // The client hears the answer before this process ends (or the wait
                        // ends: a client gone takes no answer).
                        let _ = request.answered.recv_timeout(ANSWER_WAIT);
                        let detail = format!("it runs at {} now", request.params.to);
                        break StopEvent::new(ExitReason::Migrated, detail);
                    }
                }
                None => break StopEvent::new(ExitReason::Killed, "event channel closed"),
            }
        };
        vcpu::stop_all(&runtime.vcpu_control, handles)?;
        // Events that raced with this one belong to the guest that just stopped, except a kill
        // from outside: that must not be lost to a restart.
        for late in events.try_iter() {
            match late {
                VmmEvent::Stop(late)
                    if late.reason == ExitReason::Killed && event.reason != ExitReason::Killed =>
                {
                    event = late
                }
                VmmEvent::Stop(_) => {}
                VmmEvent::Snapshot(request) => refuse_snapshot(request),
                VmmEvent::Migrate(request) => refuse_migration(request),
            }
        }
        drop(vcpus);
        drop(context);
        drop(vm);
        // A kill may race with the guest's own reboot or crash; the kill is what ends the VM.
        if runtime.kill_requested() && event.reason != ExitReason::Killed {
            event = StopEvent::new(ExitReason::Killed, "killed through the control socket");
        }

        let action = match event.reason {
            // A guest asked to shut down ends the run whatever it does: Linux answers
            // Ctrl-Alt-Del with a reboot, which must not bring it back.
            _ if runtime.stop_requested() => Action::Destroy,
            ExitReason::Poweroff => config.on_poweroff,
            ExitReason::Reboot => config.on_reboot,
            ExitReason::Crashed => config.on_crash,
            ExitReason::Killed | ExitReason::Migrated => Action::Destroy,
        };
        report_stop(&event, &mut crash_reports);
        if action == Action::Destroy {
            return Ok(VmExit::new(event, restarts, false));
        }
        match history.next(config.restart_limit, monotonic_now(), booted.elapsed()) {
            Verdict::GiveUp => {
                tracing::warn!(
                    "the guest stopped ({}) again; not restarting it: its restart limit is {}",
                    event.reason,
                    config.restart_limit
                );
                let detail = format!(
                    "{} reached (restart_limit); the last run: {}",
                    config.restart_limit, event.detail
                );
                return Ok(VmExit::new(StopEvent { detail, ..event }, restarts, true));
            }
            Verdict::RestartAfter(wait) => {
                tracing::info!("restarting the guest in {wait:?}");
                if let Some(ended) = wait_to_restart(&events, &runtime, wait, &event, &mut log) {
                    return Ok(VmExit::new(ended, restarts, false));
                }
                restarts += 1;
            }
        }
        devices.reset();
    }
}

/// Most crash reports (with registers) a VMM logs per minute; a crash loop logs a count for the
/// rest.
const CRASH_REPORTS_PER_MINUTE: u32 = 3;

/// Logs how the guest stopped: a crash with its registers (rate-limited), anything else briefly.
fn report_stop(event: &StopEvent, crash_reports: &mut RateLimit) {
    if event.reason != ExitReason::Crashed {
        tracing::info!("guest stopped ({}): {}", event.reason, event.detail);
        return;
    }
    match crash_reports.check(Instant::now()) {
        Allowed::Yes { held: 0 } => tracing::error!("guest crashed: {}", event.detail),
        Allowed::Yes { held } => tracing::error!(
            "guest crashed: {} ({held} more crashes not logged)",
            event.detail
        ),
        Allowed::No => {}
    }
}

/// How often the main thread checks whether its log needs rotating.
const LOG_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The VMM's own log (stdout and stderr), rotated by the main thread: its filter is the only
/// one that allows the calls (and the other threads must not wait for a rotation either).
struct OwnLog(Option<StdioLog>);

impl OwnLog {
    /// Rotates the log if it is full; a log that cannot rotate is given up with a warning and
    /// keeps growing, rather than failing every check.
    fn check(&mut self) {
        let Some(log) = &self.0 else {
            return;
        };
        if let Err(err) = log.rotate_if_full() {
            tracing::warn!(
                "cannot rotate the log {}, it grows from here on: {err}",
                log.path().display()
            );
            self.0 = None;
        }
    }
}

/// A snapshot asked for while no guest runs (between a stop and a restart).
fn refuse_snapshot(request: SnapshotRequest) {
    let _ = request.reply.send(Err(SnapshotError::NoGuest));
}

/// A migration asked for while no guest runs.
fn refuse_migration(request: MigrateRequest) {
    let _ = request.reply.send(Err(MigrationError::NoGuest));
}

/// How long a migrated VMM waits for its answer to reach the control client before it exits.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The next event, or `None` once `deadline` passes (never when `None`) or the channel
/// closes. The log is checked every [`LOG_CHECK_INTERVAL`] meanwhile.
fn next_event(
    events: &mpsc::Receiver<VmmEvent>,
    deadline: Option<Instant>,
    log: &mut OwnLog,
) -> Option<VmmEvent> {
    loop {
        let mut wait = LOG_CHECK_INTERVAL;
        if let Some(deadline) = deadline {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        }
        match events.recv_timeout(wait) {
            Ok(event) => return Some(event),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => log.check(),
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return None;
        }
    }
}

/// Waits `wait` before a restart. A stop requested meanwhile ends the run instead: `Some` with
/// how (killed, or the event the guest stopped with when a shutdown was asked for).
fn wait_to_restart(
    events: &mpsc::Receiver<VmmEvent>,
    runtime: &Runtime,
    wait: Duration,
    stopped: &StopEvent,
    log: &mut OwnLog,
) -> Option<StopEvent> {
    let deadline = Instant::now() + wait;
    // No guest runs: only the control socket (or its shutdown timer) sends now.
    while let Some(event) = next_event(events, Some(deadline), log) {
        match event {
            VmmEvent::Stop(event) if event.reason == ExitReason::Killed => return Some(event),
            VmmEvent::Stop(_) => {}
            VmmEvent::Snapshot(request) => refuse_snapshot(request),
            VmmEvent::Migrate(request) => refuse_migration(request),
        }
    }
    if runtime.kill_requested() {
        return Some(StopEvent::new(
            ExitReason::Killed,
            "killed through the control socket",
        ));
    }
    runtime.stop_requested().then(|| stopped.clone())
}
