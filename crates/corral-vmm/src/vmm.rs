//! Running one VM: check the configuration, build the VM, run its vCPUs, and act on how the guest
//! stops (exit, or restart in the same process), as `corral vmm run` does.

use std::sync::mpsc;
use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::acpi::{self, AcpiTooLarge};
use crate::arch::x86_64::cpuid::{host_kvm_emulates_kernel_code, CpuidPolicy};
use crate::arch::x86_64::layout::{ACPI_START, MPTABLE_START};
use crate::arch::x86_64::regs::EntryPoint;
use crate::arch::x86_64::InitrdPlacement;
use crate::arch::x86_64::{low_ram_end, mptable, write_pvh_start_info, write_zero_page};
use crate::config::{Action, ConfigError, VmConfig};
use crate::console::{Console, ConsoleError, SocketFiles};
use crate::control::{self, Runtime};
use crate::devices::{open_virtio_devices, virtio_slots, DeviceError, DeviceManager};
use crate::exit::{ExitReason, StopEvent, StopSender};
use crate::kernel::{place_initrd, write_cmdline, Initrd, KernelError, KernelImage};
use crate::vstate::vcpu::{self, install_kick_handler, Vcpu, VcpuContext, VcpuError};
use crate::vstate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open /dev/kvm: {0}; is KVM available and are you allowed to use it?")]
    Kvm(kvm_ioctls::Error),
    #[error("{asked} vCPUs asked for, but this host's KVM allows at most {max}")]
    TooManyVcpus { asked: u8, max: usize },
    #[error("cannot read the CPUID KVM supports: {0}")]
    Cpuid(kvm_ioctls::Error),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableTooLarge),
    #[error("control socket: {0}")]
    Control(#[from] corral_control::ControlError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot write the boot information: {0}")]
    BootInfo(#[from] linux_loader::configurator::Error),
    #[error(transparent)]
    Acpi(#[from] AcpiTooLarge),
    #[error("cannot write the {0} into guest memory: {1}")]
    WriteTables(&'static str, vm_memory::GuestMemoryError),
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
}

impl VmExit {
    /// The VMM process's exit status: 0 for a power-off, the guest's byte for a debug-exit write,
    /// 3 after a reboot, 4 after a crash, 5 when killed (see docs/vmm.md).
    pub fn exit_status(&self) -> u8 {
        match self.reason {
            ExitReason::Poweroff => self.guest_code.unwrap_or(0),
            ExitReason::Reboot => 3,
            ExitReason::Crashed => 4,
            ExitReason::Killed => 5,
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
}

fn prepare(config: &VmConfig) -> Result<Prepared, VmmError> {
    config.validate()?;
    let kernel = KernelImage::open(&config.kernel)?;
    let mut cmdline = config.cmdline.clone();
    for slot in virtio_slots(config.virtio_device_count()).map_err(DeviceError::from)? {
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
    let acpi_tables = acpi::build(config.vcpus)?;
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
    })
}

/// Builds a fresh VM with the kernel loaded and its vCPUs configured, ready to start.
fn build_vm(
    config: &VmConfig,
    prepared: &mut Prepared,
    devices: &DeviceManager,
) -> Result<(Vm, Vec<Vcpu>), VmmError> {
    let vm = Vm::new(&prepared.kvm, config.memory.0)?;
    let (entry, setup_header) = prepared.kernel.load(&vm.memory)?;
    if let (Some(initrd), Some(placement)) = (&mut prepared.initrd, prepared.initrd_placement) {
        initrd.load(&vm.memory, placement)?;
    }
    write_cmdline(&vm.memory, &prepared.cmdline, &prepared.kernel.info)?;
    match entry {
        EntryPoint::Pvh(_) => {
            write_pvh_start_info(&vm.memory, config.memory.0, prepared.initrd_placement)?
        }
        EntryPoint::Linux64(_) => write_zero_page(
            &vm.memory,
            config.memory.0,
            setup_header,
            prepared.cmdline.len(),
            prepared.initrd_placement,
        )?,
    }
    // Both descriptions of the machine: the MP table for guests without ACPI, ACPI for the rest.
    vm.memory
        .write_slice(&prepared.mptable, GuestAddress(MPTABLE_START))
        .map_err(|err| VmmError::WriteTables("MP table", err))?;
    vm.memory
        .write_slice(&prepared.acpi_tables, GuestAddress(ACPI_START))
        .map_err(|err| VmmError::WriteTables("ACPI tables", err))?;
    devices.attach(&vm.fd, &vm.memory)?;
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    for index in 0..config.vcpus {
        let vcpu = Vcpu::new(&vm.fd, index)?;
        vcpu.configure(&prepared.cpuid, prepared.policy, &vm.memory, entry)?;
        vcpus.push(vcpu);
    }
    tracing::info!(
        "booting {} with {} vCPUs and {} through {entry:?}",
        config.kernel.display(),
        config.vcpus,
        config.memory
    );
    Ok((vm, vcpus))
}

/// Runs the VM described by `config` until it stops for good.
pub fn run(config: &VmConfig) -> Result<VmExit, VmmError> {
    let mut prepared = prepare(config)?;

    let mut sockets = SocketFiles::default();
    // Opened first so that a missing disk or tap fails before anything else is set up.
    let virtio_devices = open_virtio_devices(config)?;
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

    let (sender, events) = mpsc::channel::<StopEvent>();
    let stop = StopSender::new(sender);
    let devices = DeviceManager::new(console.output(), stop.clone(), virtio_devices)?;
    console.start_input(devices.serial.clone());
    install_kick_handler()?;

    let runtime = Arc::new(Runtime::new(
        stop.clone(),
        devices.i8042.clone(),
        config.vcpus,
        config.memory.0,
    ));
    if let Some(listener) = control_listener {
        control::serve(listener, runtime.clone());
    }

    let mut restarts = 0;
    loop {
        let (vm, vcpus) = build_vm(config, &mut prepared, &devices)?;
        let context = Arc::new(VcpuContext {
            pio_bus: devices.pio_bus.clone(),
            mmio_bus: devices.mmio_bus.clone(),
            control: runtime.vcpu_control.clone(),
            counters: runtime.counters.clone(),
            stop: stop.clone(),
            memory: vm.memory.clone(),
        });
        runtime.boot_started();
        let handles = vcpu::start_all(vcpus, &context)?;
        // `runtime` holds a sender, so the channel never disconnects while we wait.
        let mut event = events
            .recv()
            .unwrap_or_else(|_| StopEvent::new(ExitReason::Killed, "event channel closed"));
        vcpu::stop_all(&runtime.vcpu_control, handles)?;
        // Events that raced with this one belong to the guest that just stopped, except a kill
        // from outside: that must not be lost to a restart.
        for late in events.try_iter() {
            if late.reason == ExitReason::Killed && event.reason != ExitReason::Killed {
                event = late;
            }
        }
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
            ExitReason::Killed => Action::Destroy,
        };
        tracing::info!("guest stopped ({}): {}", event.reason, event.detail);
        if action == Action::Destroy {
            return Ok(VmExit {
                reason: event.reason,
                guest_code: event.guest_code,
                detail: event.detail,
                restarts,
            });
        }
        restarts += 1;
        tracing::info!("restarting the guest (restart {restarts})");
        devices.reset();
    }
}
