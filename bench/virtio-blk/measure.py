#!/usr/bin/env python3
"""virtio-blk throughput: the same workload (guests/virtio-blk-bench.c) inside corral and inside
qemu-system-x86_64 -M microvm on the same guest, and the same access pattern on a host file.

Each VM run gets a fresh sparse raw image, or with --format qcow2 a fresh qcow2 overlay (made by
qemu-img, so both VMMs start from the same file) over a sparse raw base. The host timestamps the
guest's "phase NAME start" / "phase NAME done BYTES" console lines, so both VMMs are timed the same
way. Prints MiB/s per phase (best of the runs) and the corral/qemu and corral/host ratios.
"""
import argparse
import os
import subprocess
import tempfile
import time

PHASES = ["seq-write", "seq-read", "rand-write", "rand-read", "rand-alloc"]
CHUNK = 256 << 10
SMALL = 4096


def qemu(guest, disk, image_format, cmdline):
    return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "kvm", "-nodefaults",
            "-no-user-config", "-display", "none", "-cpu", "qemu64", "-m", "64M",
            "-serial", "stdio", "-kernel", guest, "-append", cmdline,
            "-global", "virtio-mmio.force-legacy=false",
            "-drive", f"file={disk},format={image_format},if=none,id=d0,cache=writeback",
            "-device", "virtio-blk-device,drive=d0",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], 1  # (0 << 1) | 1


def corral(binary, guest, disk, image_format, cmdline):
    return [binary, "vmm", "run", "--memory", "64M", "--kernel", guest, "--cmdline", cmdline,
            "--disk", f"path={disk},format={image_format}"], 0


def make_image(path, size, image_format):
    """A fresh sparse raw image, or a qcow2 overlay over a fresh sparse raw base."""
    base = path + ".base" if image_format == "qcow2" else path
    with open(base, "wb") as image:
        image.truncate(size)
    if image_format == "qcow2":
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw",
                        path], check=True)


def remove_image(path, image_format):
    os.unlink(path)
    if image_format == "qcow2":
        os.unlink(path + ".base")


def run_vm(argv, expected, phases):
    """Runs a VM and returns {phase: seconds, bytes}."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    started, results = {}, {}
    for line in process.stdout:
        now = time.perf_counter()
        words = line.split()
        if len(words) >= 3 and words[0] == "phase":
            if words[2] == "start":
                started[words[1]] = now
            elif words[2] == "done":
                results[words[1]] = (now - started[words[1]], int(words[3]))
    status = process.wait()
    if status != expected or sorted(results) != sorted(phases):
        raise SystemExit(f"{argv[0]} exited with {status} after phases {sorted(results)}")
    return results


def run_host(path, mib, ops, alloc_mib):
    """The guest's access pattern with pread/pwrite on a host file (page cache, like the VMMs)."""
    size = mib << 20
    buffer = bytes((i * 13) & 0xff for i in range(CHUNK))
    small = buffer[:SMALL]
    results = {}
    fd = os.open(path, os.O_RDWR)
    try:
        start = time.perf_counter()
        for offset in range(0, size, CHUNK):
            os.pwrite(fd, buffer, offset)
        os.fsync(fd)
        results["seq-write"] = (time.perf_counter() - start, size)
        start = time.perf_counter()
        for offset in range(0, size, CHUNK):
            os.pread(fd, CHUNK, offset)
        results["seq-read"] = (time.perf_counter() - start, size)
        seed, blocks, mask = 12345, size // SMALL, (1 << 64) - 1

        def next_offset():
            nonlocal seed
            seed = (seed * 6364136223846793005 + 1442695040888963407) & mask
            return ((seed >> 33) % blocks) * SMALL

        start = time.perf_counter()
        for _ in range(ops):
            os.pwrite(fd, small, next_offset())
        os.fsync(fd)
        results["rand-write"] = (time.perf_counter() - start, ops * SMALL)
        start = time.perf_counter()
        for _ in range(ops):
            os.pread(fd, SMALL, next_offset())
        results["rand-read"] = (time.perf_counter() - start, ops * SMALL)
        if alloc_mib:
            fresh = (alloc_mib << 20) // SMALL
            start = time.perf_counter()
            for _ in range(ops):
                seed = (seed * 6364136223846793005 + 1442695040888963407) & mask
                os.pwrite(fd, small, size + ((seed >> 33) % fresh) * SMALL)
            os.fsync(fd)
            results["rand-alloc"] = (time.perf_counter() - start, ops * SMALL)
    finally:
        os.close(fd)
    return results


def mib_per_s(result):
    seconds, size = result
    return size / (1 << 20) / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corral", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--alloc-mib", type=int, default=0,
                        help="add the rand-alloc phase: random 4 KiB writes into N fresh MiB")
    parser.add_argument("--format", choices=["raw", "qcow2"], default="raw")
    args = parser.parse_args()
    cmdline = f"bench_mib={args.mib} bench_ops={args.ops} bench_alloc_mib={args.alloc_mib}"
    phases = PHASES if args.alloc_mib else PHASES[:-1]

    best = {peer: {} for peer in ["corral", "qemu-microvm", "host"]}
    with tempfile.TemporaryDirectory(prefix="corral-bench-blk.") as work:
        for run in range(args.runs):
            for peer in best:
                disk = os.path.join(work, f"{peer}-{run}.img")
                # The host-file peer always works on a plain file.
                image_format = args.format if peer != "host" else "raw"
                make_image(disk, (args.mib + args.alloc_mib + 16) << 20, image_format)
                if peer == "corral":
                    argv = corral(args.corral, args.guest, disk, image_format, cmdline)
                    results = run_vm(*argv, phases)
                elif peer == "qemu-microvm":
                    results = run_vm(*qemu(args.guest, disk, image_format, cmdline), phases)
                else:
                    results = run_host(disk, args.mib, args.ops, args.alloc_mib)
                remove_image(disk, image_format)
                for phase, result in results.items():
                    best[peer][phase] = max(best[peer].get(phase, 0), mib_per_s(result))

    alloc = f", {args.ops} into {args.alloc_mib} fresh MiB" if args.alloc_mib else ""
    print(f"virtio-blk on {args.format}, {args.mib} MiB sequential in 256 KiB requests, "
          f"{args.ops} random 4 KiB requests{alloc}, queue depth 1, best of {args.runs} (MiB/s)")
    print(f"{'phase':<12}{'corral':>10}{'qemu':>10}{'host':>10}{'corral/qemu':>13}"
          f"{'corral/host':>13}")
    for phase in phases:
        c, q, h = (best[peer][phase] for peer in ["corral", "qemu-microvm", "host"])
        print(f"{phase:<12}{c:>10.1f}{q:>10.1f}{h:>10.1f}{c / q:>13.2f}{c / h:>13.3f}")


if __name__ == "__main__":
    main()
