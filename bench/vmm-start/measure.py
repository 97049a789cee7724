"""Runs corral, QEMU and (given its binary) Firecracker on the same guest, interleaved, and reports
medians and ratios.

Each run is one process from fork to exit. With the test guest (--guest), which exits at its first
debug-exit write, the wall time is "process start to the guest's first port write" plus teardown.
With --linux-dir, each boots the ACPI variant of the real-Linux guest (2 vCPUs) to its init,
which reboots, and each VMM exits on that reboot: Firecracker's ACPI tables have no \_S5 (the
guest would halt instead of powering off) and its FADT no reset register, so Linux resets through
the i8042, which ends Firecracker; QEMU's microvm has no i8042 but its FADT's reset register ends
it (-no-reboot), as corral's does (--on-reboot destroy). The kernel command line is the same for
all: Firecracker appends `pci=off` itself (it offers no PCI), so the others get it too, and
`lapic=notscdeadline`, since Firecracker always offers the TSC deadline timer (its CPUID
normalisation sets it after any template), which this host's emulating KVM mishandles (the guest
spends itself in back-to-back timer interrupts); corral hides it and QEMU's qemu64 model has none.
Each VMM enters the vmlinux its own way: Firecracker and QEMU through its PVH entry, corral
through the 64-bit boot protocol, whose setup_data carries a random seed from the host that the
guest credits to its RNG (CONFIG_RANDOM_TRUST_BOOTLOADER); PVH has no way to pass one.
CPU time comes from wait4()'s rusage, peak RSS from GNU time (`time` package).

corral's rows run `corral-vmm` (--vmm, by default the one beside --corral), the VMM-only
executable the instance manager launches; `corral-cli-reset` runs the same VM as `corral vmm run`
from the whole corral executable, to show what the split saves.

Firecracker has no debug-exit port: with --firecracker, corral and Firecracker both run the reset
guest (--reset-guest: prints a line, then resets through the i8042, which ends both VMMs), and
Firecracker is configured from one JSON file with no API socket, its compiled-in seccomp filters
on. corral runs it twice: as `vmm run` (its seccomp filters on) and jailed (`--jail`, needs root:
filters, namespaces, the unprivileged user), the hardening Firecracker's jailer adds. With
--firecracker-jailer (root), Firecracker runs jailed too, as its production setups run it: its
jailer (built beside it by bench/peers/firecracker.sh) makes the chroot, copies Firecracker into
it (by design: jailed Firecrackers share no text), makes the device nodes, drops to `nobody` and
execs Firecracker there; each run starts from a chroot holding only the guest and the config.
"""
import json
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

def qemu_microvm(acpi):
    return ["qemu-system-x86_64", "-M", f"microvm,acpi={acpi}", "-accel", "kvm", "-nodefaults",
            "-no-user-config", "-display", "none"]


def measure(argv, expected_status, scratch):
    """(wall s, CPU s, peak RSS KiB) of one run. The peak RSS comes from GNU time, which forks
    the VMM from its own small process: a process this script spawns starts its peak at this
    (Python) process's RSS, since exec counts the memory it replaces."""
    rss_file = os.path.join(scratch, "maxrss")
    start = time.perf_counter()
    process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + argv,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != expected_status:
        raise SystemExit(f"{argv[0]} exited with {code}, expected {expected_status}")
    with open(rss_file) as file:
        peak = int(file.read().split()[-1])
    return wall, usage.ru_utime + usage.ru_stime, peak


# KVM's tracepoints, counted per VMM process by `perf stat` (--kvm-events): exits to the VMM
# (userspace), port and MMIO accesses (in-kernel devices included), MSR and CPUID exits,
# instructions KVM's emulator executed (on a host without VT-x every guest ring-0 instruction),
# interrupts accepted by the local APICs and their EOIs, and halted vCPUs woken.
KVM_EVENTS = ["kvm_userspace_exit", "kvm_pio", "kvm_mmio", "kvm_msr", "kvm_cpuid",
              "kvm_emulate_insn", "kvm_apic_accept_irq", "kvm_eoi", "kvm_vcpu_wakeup"]


def count_kvm_events(argv, expected_status, scratch):
    """One more run of `argv` under `perf stat`: {tracepoint: count} (needs root or
    perf_event_paranoid <= -1)."""
    output = os.path.join(scratch, "perf-stat")
    events = ",".join(f"kvm:{name}" for name in KVM_EVENTS)
    status = subprocess.run(["perf", "stat", "-x,", "-o", output, "-e", events, "--"] + argv,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
    if status != expected_status:
        raise SystemExit(f"perf stat {argv[0]} exited with {status}, expected {expected_status}")
    counts = {}
    with open(output) as file:
        for line in file:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[2].startswith("kvm:"):
                counts[fields[2][4:]] = int(fields[0]) if fields[0].isdigit() else 0
    return counts


def sandbox_peers(args, memory, scratch):
    """corral's confinement, one step at a time: without seccomp filters, jailed (`vmm run
    --jail`, filters on), and the instance path (`corral start`, which always jails the VMM in
    the instance's cgroup; its rusage includes the VMM, which it reaps)."""
    vmm = [args.vmm, "--kernel", args.guest, "--memory", memory]
    jail = os.path.join(scratch, "jail")
    os.mkdir(jail)
    root = os.path.join(scratch, "root")
    subprocess.run([args.corral, "--root", root, "create", "bench", "--kernel", args.guest,
                    "--memory", memory, "--default-network", "none"], check=True,
                   stdout=subprocess.DEVNULL)
    return {
        "corral-no-seccomp": (vmm + ["--serial", "none", "--no-seccomp"], 42),
        "corral-jail": (vmm + ["--serial", "none", "--jail", jail, "--exit-file",
                               os.path.join(jail, "exit.json")], 42),
        "corral-instance": ([args.corral, "--root", root, "start", "bench"], 0),
    }


def settle_instance(args, root):
    """Waits (up to 10 s) until the instance's detached VMM has ended, so it does not run
    beside the next measurement."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = subprocess.run([args.corral, "--root", root, "list"], capture_output=True,
                                text=True).stdout
        if "bench" not in listed:
            return
        time.sleep(0.01)


def test_guest_peers(args, memory):
    """The test guest writes 42 to port 0xf4 at once."""
    peers = {
        "corral": ([args.vmm, "--kernel", args.guest, "--memory", memory, "--serial", "none"],
                   42),
        # isa-debug-exit reports (value << 1) | 1.
        "qemu-microvm": (qemu_microvm("off") + ["-cpu", "qemu64", "-m", memory, "-serial", "none",
                                         "-kernel", args.guest, "-device",
                                         "isa-debug-exit,iobase=0xf4,iosize=0x04"], 85),
    }
    if args.baseline:
        peers["corral-baseline"] = ([args.baseline] + peers["corral"][0][1:], 42)
    return peers


def firecracker_peers(args, memory, scratch):
    """corral and Firecracker on the reset guest, one vCPU, console discarded."""
    config = os.path.join(scratch, "firecracker.json")
    with open(config, "w") as file:
        json.dump({
            "boot-source": {"kernel_image_path": args.reset_guest, "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": args.memory_mib},
            "drives": [],
        }, file)
    run = ["--kernel", args.reset_guest, "--memory", memory, "--serial", "none", "--on-reboot",
           "destroy"]
    vmm = [args.vmm] + run
    peers = {
        "corral-reset": (vmm, 3),
        "corral-cli-reset": ([args.corral, "vmm", "run"] + run, 3),
        "firecracker": ([args.firecracker, "--no-api", "--config-file", config,
                         "--level", "Error"], 0),
    }
    if os.geteuid() == 0:
        jail = os.path.join(scratch, "reset-jail")
        os.mkdir(jail)
        peers["corral-reset-jail"] = (vmm + ["--jail", jail, "--exit-file",
                                             os.path.join(jail, "exit.json")], 3)
        if args.firecracker_jailer:
            peers["firecracker-jailed"] = firecracker_jailed(args, scratch)
    return peers


def firecracker_jailed(args, scratch):
    """Firecracker under its jailer on the reset guest, and what makes each run's chroot."""
    base = os.path.join(scratch, "jailer")
    root = os.path.join(base, "firecracker", "bench", "root")

    def fresh_chroot():
        shutil.rmtree(os.path.join(base, "firecracker"), ignore_errors=True)
        os.makedirs(root)
        shutil.copy(args.reset_guest, os.path.join(root, "guest.elf"))
        with open(os.path.join(root, "config.json"), "w") as file:
            json.dump({
                "boot-source": {"kernel_image_path": "guest.elf", "boot_args": "console=ttyS0"},
                "machine-config": {"vcpu_count": 1, "mem_size_mib": args.memory_mib},
                "drives": [],
            }, file)

    cgroups = "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"
    nobody = "65534"
    return ([args.firecracker_jailer, "--id", "bench", "--exec-file", args.firecracker,
             "--uid", nobody, "--gid", nobody, "--chroot-base-dir", base,
             "--cgroup-version", cgroups, "--", "--no-api", "--config-file", "config.json",
             "--level", "Error"], 0, fresh_chroot)


def host_kvm_emulates_kernel_code():
    """No VT-x/AMD-V: KVM runs guest ring-0 code in its instruction emulator (as corral-vmm's
    cpuid.rs decides it)."""
    with open("/proc/cpuinfo") as file:
        flags = next((line.split(":", 1)[1].split() for line in file
                      if line.startswith("flags")), [])
    return "vmx" not in flags and "svm" not in flags


def bits(clear=(), set_=(), keep_only=None):
    """A Firecracker CPU template bitmap: `0` clears a bit, `1` sets it, `x` keeps it."""
    def one(bit):
        if keep_only is not None:
            return "x" if bit in keep_only else "0"
        return "0" if bit in clear else "1" if bit in set_ else "x"
    return "0b" + "".join(one(bit) for bit in range(31, -1, -1))


def firecracker_cpu_template():
    """What Firecracker's guest needs on a host whose KVM emulates kernel code: only the KVM
    paravirtual features that need no hypercall (leaf 0x40000001), as corral-vmm offers them
    (crates/corral-vmm/src/arch/x86_64/cpuid.rs, hide_unemulated). With KVM's full set the guest
    hangs bringing up its second CPU, after "x86: Booting SMP configuration:"; added one at a time
    to corral's set, PV unhalt, TLB flush, IPIs and sched yield each boot, poll control (bit 11)
    hangs. The instruction families corral also hides (popcnt, xsave, rdrand, fsgsbase, erms,
    ...) the command line's `noxsave clearcpuid=...` hides from every guest (template modifiers
    of leaves 1 and 7 do not survive Firecracker's CPUID normalisation here), and the TSC
    deadline bit, which the normalisation always sets, the command line's lapic=notscdeadline."""
    return {"cpuid_modifiers": [
        {"leaf": "0x40000001", "subleaf": "0x0", "flags": 0,
         "modifiers": [{"register": "eax", "bitmap": bits(keep_only=(0, 1, 3, 4, 5, 6, 24))}]},
    ]}


# Firecracker adds `pci=off` to every command line when it offers no PCI: the others get it too.
FIRECRACKER_ADDS = " pci=off"


def linux_peers(args, memory, scratch):
    """Real Linux with ACPI, 2 vCPUs, console on stdout (discarded), exit on the guest's reboot
    (the command line must not ask init to power off: Firecracker's guest cannot)."""
    kernel = os.path.join(args.linux_dir, "vmlinux")
    initrd = os.path.join(args.linux_dir, "initramfs.cpio")
    cmdline = args.cmdline + FIRECRACKER_ADDS
    peers = {
        "corral": ([args.vmm, "--kernel", kernel, "--initrd", initrd,
                    "--cmdline", cmdline, "--vcpus", "2", "--memory", memory,
                    "--on-reboot", "destroy"], 3),
        # The CPU model the guest-linux recipe was measured with (see guests/linux/README.md).
        "qemu-microvm": (qemu_microvm("on") + ["-cpu", "qemu64,+xsaveerptr", "-smp", "2",
                                         "-m", memory, "-serial", "stdio", "-kernel", kernel,
                                         "-initrd", initrd, "-append", cmdline,
                                         "-no-reboot"], 0),
    }
    if args.baseline:
        peers["corral-baseline"] = ([args.baseline] + peers["corral"][0][1:], 3)
    if args.firecracker:
        config = os.path.join(scratch, "firecracker-linux.json")
        firecracker = {
            "boot-source": {"kernel_image_path": kernel, "initrd_path": initrd,
                            "boot_args": args.cmdline},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": args.memory_mib},
            "drives": [],
        }
        if host_kvm_emulates_kernel_code():
            firecracker["cpu-config"] = firecracker_cpu_template()
        with open(config, "w") as file:
            json.dump(firecracker, file)
        peers["firecracker"] = ([args.firecracker, "--no-api", "--config-file", config,
                                 "--level", "Error"], 0)
    return peers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--corral", required=True)
    parser.add_argument("--vmm", help="corral-vmm (default: the one beside --corral)")
    parser.add_argument("--memory-mib", type=int, default=128)
    parser.add_argument("--guest", help="the test guest (PVH ELF)")
    parser.add_argument("--linux-dir", help="guests/linux/build.sh output: boot real Linux")
    parser.add_argument("--cmdline", default="", help="kernel command line with --linux-dir")
    parser.add_argument("--sandbox", action="store_true",
                        help="with --guest: also corral without seccomp, jailed, and as an "
                             "instance (needs root)")
    parser.add_argument("--baseline", help="an earlier corral-vmm binary, measured beside this "
                                           "one (the cost of what changed since)")
    parser.add_argument("--firecracker", help="a Firecracker binary (bench/peers/firecracker.sh)")
    parser.add_argument("--reset-guest", help="with --firecracker: the test guest that resets "
                                              "through the i8042 (PVH ELF)")
    parser.add_argument("--firecracker-jailer", help="with --firecracker, as root: Firecracker's "
                                                     "jailer, to run it jailed too")
    parser.add_argument("--kvm-events", action="store_true",
                        help="after the timed runs, run each VMM once more under perf stat and "
                             "print its KVM exits and emulated instructions by kind")
    args = parser.parse_args()
    args.vmm = args.vmm or os.path.join(os.path.dirname(args.corral), "corral-vmm")

    memory = f"{args.memory_mib}M"
    scratch = tempfile.TemporaryDirectory(prefix="corral-bench-")
    if args.linux_dir:
        peers = linux_peers(args, memory, scratch.name)
        label = "real Linux (ACPI) to init and its reboot, 2 vCPUs"
    else:
        peers, label = test_guest_peers(args, memory), os.path.basename(args.guest)
        if args.sandbox:
            peers.update(sandbox_peers(args, memory, scratch.name))
        if args.firecracker:
            peers.update(firecracker_peers(args, memory, scratch.name))
    samples = {name: [] for name in peers}
    for _ in range(args.runs):
        for name, (argv, expected, *prepare) in peers.items():
            for step in prepare:
                step()
            samples[name].append(measure(argv, expected, scratch.name))
            if name == "corral-instance":
                settle_instance(args, os.path.join(scratch.name, "root"))

    print(f"vmm-start: {label}, {memory}, {args.runs} runs each (interleaved); medians")
    print(f"{'':18} {'wall ms':>10} {'cpu ms':>10} {'peak RSS MiB':>13}")
    medians = {}
    for name, runs in samples.items():
        wall = statistics.median(r[0] for r in runs) * 1000
        cpu = statistics.median(r[1] for r in runs) * 1000
        rss = statistics.median(r[2] for r in runs) / 1024
        medians[name] = (wall, cpu, rss)
        print(f"{name:18} {wall:10.1f} {cpu:10.1f} {rss:13.1f}")
    corral, qemu = medians["corral"], medians["qemu-microvm"]
    print(f"{'corral/qemu':18} {corral[0] / qemu[0]:10.2f} {corral[1] / qemu[1]:10.2f} "
          f"{corral[2] / qemu[2]:13.2f}")
    if "firecracker" in medians:
        firecracker = medians["firecracker"]
        for name in ("corral", "corral-reset", "corral-reset-jail", "corral-cli-reset"):
            if name == "corral" and not args.linux_dir:
                continue  # the test guest: corral and Firecracker run the reset guest
            if name in medians:
                ours = medians[name]
                label = name.replace("corral-reset", "corral") + "/fc"
                print(f"{label:18} {ours[0] / firecracker[0]:10.2f} "
                      f"{ours[1] / firecracker[1]:10.2f} {ours[2] / firecracker[2]:13.2f}")
        if "firecracker-jailed" in medians and "corral-reset-jail" in medians:
            ours, theirs = medians["corral-reset-jail"], medians["firecracker-jailed"]
            print(f"{'jailed/fc jailed':18} {ours[0] / theirs[0]:10.2f} "
                  f"{ours[1] / theirs[1]:10.2f} {ours[2] / theirs[2]:13.2f}")
    if "corral-baseline" in medians:
        base = medians["corral-baseline"]
        print(f"{'corral/baseline':18} {corral[0] / base[0]:10.2f} {corral[1] / base[1]:10.2f} "
              f"{corral[2] / base[2]:13.2f}")
    if args.kvm_events:
        counted = {}
        for name, (argv, expected, *prepare) in peers.items():
            if name == "corral-instance":
                continue
            for step in prepare:
                step()
            counted[name] = count_kvm_events(argv, expected, scratch.name)
        print("KVM events, one more run each (perf stat):")
        print(f"{'':22}" + "".join(f"{name:>16}" for name in counted))
        for event in KVM_EVENTS:
            print(f"{event:22}" + "".join(f"{counts.get(event, 0):16}"
                                           for counts in counted.values()))
    if "corral-instance" in peers:
        print("corral-instance: `corral start` until the guest has ended or its VMM serves its "
              "socket; CPU and RSS are the CLI's (the VMM runs detached)")
        # The last VMM may still be writing its exit record into the instance directory.
        subprocess.run([args.corral, "--root", os.path.join(scratch.name, "root"), "delete",
                        "--force", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scratch.cleanup()


if __name__ == "__main__":
    main()
