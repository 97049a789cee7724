"""Live migration and snapshots: corral's VMM against QEMU's microvm on the same guest, the same
link and the same downtime limit, interleaved; medians and corral/QEMU ratios.

The guest (guests/migration-bench.c) fills part of its RAM and then idles (halted), or dirties a
64 MiB working set at a set rate, pacing itself on its TSC, so both VMMs migrate the same load.
Scenarios (name: RAM, what the guest does):
  idle-256, idle-1024      RAM untouched (only the guest's own pages are non-zero)
  filled-256, filled-1024  every page from 16 MiB to RAM - 16 MiB written once, then idle
  dirty-50, -200, -500     256 MiB, 64 MiB rewritten at 50, 200 or 500 MiB/s (one write per
                           4 KiB page; the rate the guest reached is reported beside: in a ring 0
                           that KVM emulates, 500 may be more than it can)

Migration: the source runs the guest until it printed `ready` (and, dirtying, for 2 s more); a
destination VMM of the same kind waits on TCP (loopback, or a veth between two network
namespaces this script creates with --veth, shaped with tc tbf at --veth-rate); the source is
told to migrate:
  corral: `corral vmm run --incoming tcp:...` at the destination, the `migrate` request on the
          source's control socket (downtime_limit_ms, max_seconds); its `migrated` answer has
          total_ms, downtime_ms, bytes (pages sent) and iterations (passes over memory)
  QEMU:   `-incoming tcp:...` at the destination; on the source's QMP socket
          migrate-set-parameters (downtime-limit, max-bandwidth 100 GB/s: QEMU 7.2 caps at
          32 MiB/s by default), `migrate`, then query-migrate until `completed`; its total-time,
          downtime, ram.transferred and ram.dirty-sync-count. QEMU never gives up on its own:
          past --max-seconds it is cancelled (migrate_cancel) and counted as not converged, which
          is what corral's `max_seconds` does.
The two downtimes are not measured at the same points: corral's runs from pausing the vCPUs to
the destination's `running` (it includes building the VM at the destination); QEMU's from
stopping the source to the end of the stream on the source side.

Snapshots: corral `snapshot` request (pause, write `state` + sparse `memory`, resume), timed at
the client; restore = `corral vmm run --restore DIR` from spawn to its "restored a VM" log line
(memory loaded, state set; the vCPUs start right after). QEMU (7.2 has no `file:` URI): `stop`,
then `migrate exec:cat > FILE` until completed; restore = `-incoming "exec:cat FILE"` from spawn
until query-status says running. Sizes: apparent (st_size) and allocated (st_blocks, as du).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

TOKEN = "bench-migration-token"
SCENARIOS = {
    "idle-256": (256, "fill_mib=0"),
    "idle-1024": (1024, "fill_mib=0"),
    "filled-256": (256, "fill_mib=224"),
    "filled-1024": (1024, "fill_mib=992"),
    "dirty-50": (256, "dirty_mib=64 rate_mib=50"),
    "dirty-200": (256, "dirty_mib=64 rate_mib=200"),
    "dirty-500": (256, "dirty_mib=64 rate_mib=500"),
}
QEMU = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "kvm", "-nodefaults",
        "-no-user-config", "-display", "none", "-cpu", "qemu64"]
WAIT = 120


def wait_for(what, predicate, timeout=WAIT, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"measure.py: timed out waiting for {what}")
        time.sleep(interval)


def read(path):
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""


def dirtying(cmdline):
    return "dirty_mib" in cmdline


class Link:
    """Where source and destination run: both on loopback, or a namespace each, joined by a
    veth (documentation addresses 192.0.2.1 and .2), optionally shaped."""

    def __init__(self, veth, rate):
        self.veth = veth
        self.namespaces = []
        self.port = 47100
        if not veth:
            self.destination_ip = "127.0.0.1"
            return
        tag = os.getpid()
        self.namespaces = [f"corral-bench-src-{tag}", f"corral-bench-dst-{tag}"]
        source, destination = self.namespaces
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", source, "link", "add", "bmig0", "type", "veth", "peer",
                        "name", "bmig1", "netns", destination], check=True)
        for name, link, address in [(source, "bmig0", "192.0.2.1/24"),
                                    (destination, "bmig1", "192.0.2.2/24")]:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            subprocess.run(["ip", "-n", name, "address", "add", address, "dev", link], check=True)
            subprocess.run(["ip", "-n", name, "link", "set", link, "up"], check=True)
        if rate:
            # The data flows from source to destination: shape the source's end.
            subprocess.run(["ip", "netns", "exec", source, "tc", "qdisc", "add", "dev", "bmig0",
                            "root", "tbf", "rate", rate, "burst", "256kb", "latency", "400ms"],
                           check=True)
        self.destination_ip = "192.0.2.2"

    def source(self, argv):
        return ["ip", "netns", "exec", self.namespaces[0]] + argv if self.veth else argv

    def destination(self, argv):
        return ["ip", "netns", "exec", self.namespaces[1]] + argv if self.veth else argv

    def next_address(self):
        """A fresh port each migration: a listener that just ended may linger in TIME_WAIT."""
        self.port += 1
        if not self.veth:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                return "127.0.0.1", probe.getsockname()[1]
        return self.destination_ip, self.port

    def remove(self):
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "delete", name], check=False)


class Processes:
    """Every process this script started, ended by pid at the end of each run."""

    def __init__(self):
        self.started = []

    def spawn(self, argv, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        process = subprocess.Popen(argv, **kwargs)
        self.started.append(process)
        return process

    def end_all(self):
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.started = []


def control(path, request, timeout=WAIT):
    """One request on a corral control socket; its answer as a dict."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return json.loads(answer)


class Qmp:
    def __init__(self, path):
        self.sock = wait_for(f"QMP at {path}", lambda: self._connect(path))
        self.buffer = b""
        self._message()  # the greeting
        self.command("qmp_capabilities")

    @staticmethod
    def _connect(path):
        """The socket, or None while QEMU has not bound it or not listened on it yet."""
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(WAIT)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return sock

    def _message(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("measure.py: QEMU closed its QMP socket")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def command(self, name, **arguments):
        request = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._message()
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise SystemExit(f"measure.py: QMP {name}: {message['error']['desc']}")
            # an event: skip

    def close(self):
        self.sock.close()


def corral_source(args, procs, link, scratch, memory, cmdline, track=True):
    console = os.path.join(scratch, "source.console")
    sock = os.path.join(scratch, "source.sock")
    argv = [args.corral, "vmm", "run", "--kernel", args.guest, "--memory", f"{memory}M",
            "--cmdline", cmdline, f"--serial=file:{console}", "--control-socket", sock]
    if track:
        argv.append("--track-dirty-pages")
    procs.spawn(link.source(argv), stderr=subprocess.DEVNULL)
    return console, sock


def qemu_source(procs, link, scratch, guest, memory, cmdline):
    console = os.path.join(scratch, "qsource.console")
    qmp = os.path.join(scratch, "qsource.qmp")
    procs.spawn(link.source(QEMU + ["-m", f"{memory}M", "-kernel", guest, "-append", cmdline,
                                    "-serial", f"file:{console}", "-qmp",
                                    f"unix:{qmp},server=on,wait=off"]),
                stderr=subprocess.DEVNULL)
    return console, qmp


def wait_ready(console, cmdline):
    wait_for("the guest's `ready`", lambda: "ready" in read(console))
    if dirtying(cmdline):
        # Steady state: a couple of `rate` lines.
        wait_for("the guest's dirtying", lambda: read(console).count("rate ") >= 2)


def rates(console):
    """MiB dirtied in each second, as the guest printed them (each line ends a whole second; a
    second the guest was paused in starts a new one, unprinted)."""
    return [int(line.split()[1]) for line in read(console).splitlines()
            if line.startswith("rate ")]


def migrate_corral(args, procs, link, scratch, memory, cmdline):
    console, sock = corral_source(args, procs, link, scratch, memory, cmdline)
    wait_ready(console, cmdline)
    host, port = link.next_address()
    address = f"tcp:{host}:{port}"
    dest_console = os.path.join(scratch, "destination.console")
    stderr = open(os.path.join(scratch, "destination.stderr"), "w")
    procs.spawn(link.destination([args.corral, "vmm", "run", "--incoming", address,
                                  "--migration-token", TOKEN, f"--serial=file:{dest_console}",
                                  "--control-socket",
                                  os.path.join(scratch, "destination.sock")]), stderr=stderr)
    request = {"request": "migrate", "to": address, "token": TOKEN,
               "downtime_limit_ms": args.downtime_ms, "max_seconds": args.max_seconds,
               "max_iterations": args.max_iterations}
    deadline = time.monotonic() + 10
    while True:
        answer = control(sock, request, timeout=args.max_seconds + 60)
        if "cannot connect" not in answer.get("message", "") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    dirtied = rates(console)
    if answer.get("response") != "migrated":
        return {"converged": False, "error": answer.get("message", str(answer)),
                "rate": dirtied}
    if dirtying(cmdline):
        # The guest goes on at the destination.
        wait_for("the migrated guest to print", lambda: "rate " in read(dest_console), 10)
    return {"converged": True, "total_ms": answer["total_ms"],
            "downtime_ms": answer["downtime_ms"], "bytes": answer["bytes"],
            "iterations": answer["iterations"], "rate": dirtied}


def migrate_qemu(args, procs, link, scratch, memory, cmdline):
    console, qmp_path = qemu_source(procs, link, scratch, args.guest, memory, cmdline)
    wait_ready(console, cmdline)
    host, port = link.next_address()
    dest_console = os.path.join(scratch, "qdestination.console")
    dest_qmp = os.path.join(scratch, "qdestination.qmp")
    stderr = open(os.path.join(scratch, "qdestination.stderr"), "w")
    procs.spawn(link.destination(QEMU + ["-m", f"{memory}M", "-kernel", args.guest, "-append",
                                         cmdline, "-serial", f"file:{dest_console}", "-qmp",
                                         f"unix:{dest_qmp},server=on,wait=off", "-incoming",
                                         f"tcp:{host}:{port}"]), stderr=stderr)
    destination = Qmp(dest_qmp)  # QEMU listens for the stream before it serves QMP
    source = Qmp(qmp_path)
    source.command("migrate-set-parameters", **{"downtime-limit": args.downtime_ms,
                                                "max-bandwidth": 100 * 10**9})
    source.command("migrate", uri=f"tcp:{host}:{port}")
    deadline = time.monotonic() + args.max_seconds
    while True:
        status = source.command("query-migrate")
        if status.get("status") in ("completed", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            source.command("migrate_cancel")
            status = {"status": f"still iterating after {args.max_seconds} s: cancelled"}
            break
        time.sleep(0.01)
    dirtied = rates(console)
    source.close()
    destination.close()
    if status["status"] != "completed":
        error = status.get("error-desc", status["status"])
        if status["status"] == "failed":
            error += ": " + read(os.path.join(scratch, "qdestination.stderr")).strip()
        return {"converged": False, "error": error, "rate": dirtied}
    if dirtying(cmdline):
        wait_for("the migrated guest to print", lambda: "rate " in read(dest_console), 10)
    return {"converged": True, "total_ms": status["total-time"],
            "downtime_ms": status["downtime"], "bytes": status["ram"]["transferred"],
            "iterations": status["ram"]["dirty-sync-count"], "rate": dirtied}


def sizes(paths):
    apparent = sum(os.stat(p).st_size for p in paths)
    allocated = sum(os.stat(p).st_blocks * 512 for p in paths)
    return apparent, allocated


def snapshot_corral(args, procs, link, scratch, memory, cmdline):
    console, sock = corral_source(args, procs, link, scratch, memory, cmdline, track=False)
    wait_ready(console, cmdline)
    snapshot = os.path.join(scratch, "snapshot")
    start = time.perf_counter()
    answer = control(sock, {"request": "snapshot", "to": snapshot})
    save = time.perf_counter() - start
    if answer.get("response") != "state":
        raise SystemExit(f"measure.py: corral snapshot: {answer}")
    procs.end_all()
    apparent, allocated = sizes([os.path.join(snapshot, "memory"),
                                 os.path.join(snapshot, "state")])
    state = os.stat(os.path.join(snapshot, "state")).st_size
    start = time.perf_counter()
    restored = procs.spawn([args.corral, "vmm", "run", "--restore", snapshot,
                            f"--serial=file:{os.path.join(scratch, 'restored.console')}",
                            "--control-socket",
                            os.path.join(scratch, "restored.sock")],
                           stderr=subprocess.PIPE, env=dict(os.environ, CORRAL_LOG="info"))
    for line in restored.stderr:
        if b"restored a VM" in line:
            break
    else:
        raise SystemExit("measure.py: the corral restore ended without restoring")
    restore = time.perf_counter() - start
    procs.end_all()
    shutil.rmtree(snapshot)
    return {"save_ms": save * 1000, "restore_ms": restore * 1000, "apparent": apparent,
            "allocated": allocated, "state": state}


def snapshot_qemu(args, procs, link, scratch, memory, cmdline):
    console, qmp_path = qemu_source(procs, link, scratch, args.guest, memory, cmdline)
    wait_ready(console, cmdline)
    image = os.path.join(scratch, "qemu-state")
    qmp = Qmp(qmp_path)
    qmp.command("migrate-set-parameters", **{"max-bandwidth": 100 * 10**9})
    start = time.perf_counter()
    qmp.command("stop")
    qmp.command("migrate", uri=f"exec:cat > {image}")
    status = wait_for("QEMU's migration to a file", lambda: (
        lambda s: s if s.get("status") in ("completed", "failed") else None)(
            qmp.command("query-migrate")), interval=0.005)
    save = time.perf_counter() - start
    qmp.close()
    if status["status"] != "completed":
        raise SystemExit(f"measure.py: QEMU migrate to a file: {status}")
    procs.end_all()
    apparent, allocated = sizes([image])
    restored_qmp = os.path.join(scratch, "qrestored.qmp")
    start = time.perf_counter()
    # The same devices as the saved VM's (a serial port), or QEMU refuses the stream.
    procs.spawn(QEMU + ["-m", f"{memory}M", "-kernel", args.guest, "-append", cmdline,
                        "-serial", f"file:{os.path.join(scratch, 'qrestored.console')}", "-qmp", f"unix:{restored_qmp},server=on,wait=off",
                        "-incoming", f"exec:cat {image}"],
                stderr=open(os.path.join(scratch, "qrestored.stderr"), "w"))
    try:
        restored = Qmp(restored_qmp)
        state = wait_for("QEMU's restore", lambda: (
            lambda s: s if s != "inmigrate" else None)(restored.command("query-status")["status"]),
            interval=0.005)
        if state == "paused":
            # The stream holds the run state it was saved in: stopped, as a snapshot is taken.
            restored.command("cont")
    except OSError as err:
        raise SystemExit(f"measure.py: QEMU's restore: {err}: "
                         f"{read(os.path.join(scratch, 'qrestored.stderr'))}") from err
    restore = time.perf_counter() - start
    restored.close()
    procs.end_all()
    os.unlink(image)
    return {"save_ms": save * 1000, "restore_ms": restore * 1000, "apparent": apparent,
            "allocated": allocated, "state": None}


def median(runs, key):
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def heading(title, columns):
    """The title, then a line of right-aligned column names (each as wide as its name)."""
    print(f"\n{title}")
    print(f"  {'':8} " + " ".join(columns))


def measured(samples):
    return [peer for peer in ("corral", "qemu") if samples[peer]]


def report_migration(name, samples):
    heading(name, ["converged", " total ms", "downtime ms", " MiB sent", "passes",
                   "guest MiB/s"])
    medians = {}
    for peer in measured(samples):
        runs = samples[peer]
        ok = [r for r in runs if r["converged"]]
        rate = [v for r in runs for v in r["rate"]]
        m = {"total": median(ok, "total_ms"), "downtime": median(ok, "downtime_ms"),
             "bytes": median(ok, "bytes"), "passes": median(ok, "iterations")}
        medians[peer] = m
        print(f"  {peer:8} {len(ok):>4} of {len(runs):<2} {fmt(m['total']):>9} "
              f"{fmt(m['downtime']):>11} "
              f"{fmt(None if m['bytes'] is None else m['bytes'] / 2**20):>9} "
              f"{fmt(m['passes'], 0):>6} {fmt(statistics.median(rate) if rate else None, 0):>11}")
        for r in runs:
            if not r["converged"]:
                print(f"           not converged: {r['error'][:160]}")
    if len(medians) < 2:
        return
    c, q = medians["corral"], medians["qemu"]
    print(f"  {'corral/qemu':19} {ratio(c['total'], q['total']):>8} "
          f"{ratio(c['downtime'], q['downtime']):>11} {ratio(c['bytes'], q['bytes']):>9}")


def report_snapshots(name, memory, samples):
    heading(f"{name} snapshot ({memory} MiB RAM)", ["  save ms", "restore ms", " file MiB",
                                                      "on disk MiB", "on disk/RAM",
                                                      "state KiB"])
    medians = {}
    for peer in measured(samples):
        runs = samples[peer]
        m = {key: median(runs, key) for key in ("save_ms", "restore_ms", "apparent",
                                                 "allocated", "state")}
        medians[peer] = m
        print(f"  {peer:8} {fmt(m['save_ms']):>9} {fmt(m['restore_ms']):>10} "
              f"{fmt(m['apparent'] / 2**20):>9} {fmt(m['allocated'] / 2**20):>11} "
              f"{m['allocated'] / (memory * 2**20):>11.3f} "
              f"{fmt(None if m['state'] is None else m['state'] / 1024):>9}")
    if len(medians) < 2:
        return
    c, q = medians["corral"], medians["qemu"]
    print(f"  {'corral/qemu':8} {ratio(c['save_ms'], q['save_ms']):>9} "
          f"{ratio(c['restore_ms'], q['restore_ms']):>10} {'':9} "
          f"{ratio(c['allocated'], q['allocated']):>11}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corral", required=True)
    parser.add_argument("--guest", required=True, help="migration-bench.elf")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--snapshot-scenarios", default="idle-256,idle-1024,filled-256,"
                        "filled-1024,dirty-50")
    parser.add_argument("--downtime-ms", type=int, default=300)
    parser.add_argument("--max-seconds", type=int, default=30)
    parser.add_argument("--max-iterations", type=int, default=1000,
                        help="corral's pass limit (QEMU has none): high, so --max-seconds "
                             "decides for both")
    parser.add_argument("--veth", action="store_true",
                        help="migrate between two network namespaces over a veth (root)")
    parser.add_argument("--veth-rate", help="shape the veth (tc tbf rate, e.g. 1gbit)")
    parser.add_argument("--skip-qemu", action="store_true")
    args = parser.parse_args()

    scenarios = [s for s in args.scenarios.split(",") if s]
    snapshot_scenarios = [s for s in args.snapshot_scenarios.split(",") if s]
    for name in scenarios + snapshot_scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}")
    peers = ["corral"] + ([] if args.skip_qemu else ["qemu"])
    link = Link(args.veth, args.veth_rate)
    procs = Processes()
    scratch = tempfile.mkdtemp(prefix="corral-bench-migration-")
    migrations = {name: {peer: [] for peer in ("corral", "qemu")} for name in scenarios}
    snapshots = {name: {peer: [] for peer in ("corral", "qemu")} for name in snapshot_scenarios}
    kinds = [("", scenarios, migrations, {"corral": migrate_corral, "qemu": migrate_qemu}),
             ("snapshot ", snapshot_scenarios, snapshots,
              {"corral": snapshot_corral, "qemu": snapshot_qemu})]
    try:
        for run in range(args.runs):
            for label, names, samples, measures in kinds:
                for name in names:
                    memory, cmdline = SCENARIOS[name]
                    for peer in peers:
                        work = tempfile.mkdtemp(dir=scratch)
                        try:
                            result = measures[peer](args, procs, link, work, memory, cmdline)
                        finally:
                            procs.end_all()
                        samples[name][peer].append(result)
                        shutil.rmtree(work)
                        print(f"run {run + 1} {label}{name} {peer}: {result}", flush=True)
    finally:
        procs.end_all()
        link.remove()
        shutil.rmtree(scratch, ignore_errors=True)

    where = "loopback"
    if args.veth:
        where = f"a veth between two network namespaces{', ' + args.veth_rate if args.veth_rate else ''}"
    print(f"\nmigration over TCP on {where}, downtime limit {args.downtime_ms} ms, gives up after "
          f"{args.max_seconds} s; {args.runs} interleaved runs, medians of the converged runs")
    for name in scenarios:
        report_migration(name, migrations[name])
    for name in snapshot_scenarios:
        report_snapshots(name, SCENARIOS[name][0], snapshots[name])


if __name__ == "__main__":
    main()
