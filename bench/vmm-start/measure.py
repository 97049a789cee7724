"""Runs corral and QEMU on the same guest, interleaved, and reports medians and ratios.

Each run is one process from fork to exit: the guest exits at its first debug-exit write, so the
wall time is "process start to guest reached its first instruction's port write" plus teardown.
CPU time and peak RSS come from wait4()'s rusage of that process.
"""
import argparse
import os
import statistics
import subprocess
import time


def measure(argv, expected_status):
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != expected_status:
        raise SystemExit(f"{argv[0]} exited with {code}, expected {expected_status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--corral", required=True)
    parser.add_argument("--memory-mib", type=int, default=128)
    args = parser.parse_args()

    memory = f"{args.memory_mib}M"
    peers = {
        "corral": ([args.corral, "vmm", "run", "--kernel", args.guest, "--memory", memory,
                    "--serial", "none"], 42),
        # isa-debug-exit reports (value << 1) | 1.
        "qemu-microvm": (["qemu-system-x86_64", "-M", "microvm", "-accel", "kvm",
                          "-cpu", "qemu64", "-m", memory, "-nodefaults", "-no-user-config",
                          "-display", "none", "-serial", "none", "-kernel", args.guest,
                          "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], 85),
    }
    samples = {name: [] for name in peers}
    for _ in range(args.runs):
        for name, (argv, expected) in peers.items():
            samples[name].append(measure(argv, expected))

    print(f"vmm-start: {args.runs} runs each, guest {os.path.basename(args.guest)}, "
          f"{memory} memory; medians")
    print(f"{'':14} {'wall ms':>9} {'cpu ms':>9} {'peak RSS MiB':>13}")
    medians = {}
    for name, runs in samples.items():
        wall = statistics.median(r[0] for r in runs) * 1000
        cpu = statistics.median(r[1] for r in runs) * 1000
        rss = statistics.median(r[2] for r in runs) / 1024
        medians[name] = (wall, cpu, rss)
        print(f"{name:14} {wall:9.1f} {cpu:9.1f} {rss:13.1f}")
    corral, qemu = medians["corral"], medians["qemu-microvm"]
    print(f"{'corral/qemu':14} {corral[0] / qemu[0]:9.2f} {corral[1] / qemu[1]:9.2f} "
          f"{corral[2] / qemu[2]:13.2f}")


if __name__ == "__main__":
    main()
