"""Where a running VMM's resident memory is: starts COMMAND (a VMM booting a guest that keeps
running, e.g. the counter test guest), waits, and sums /proc/PID/smaps by mapping kind.

    python3 bench/vmm-start/breakdown.py [--wait SECONDS] -- COMMAND...

Rows: the VMM's own binary (its text and data as mapped; the kernel maps in neighbouring
page-cache pages on a fault, so this counts what is resident, not only what ran), each shared
library, heap, thread stacks, guest memory (the largest anonymous shared or private mapping, or
one named as such), other anonymous memory. Run it twice in a row: the first run may count page
cache pages still dirty from the build as "private dirty", which smaps reports but which is not
extra memory.
"""
import argparse
import collections
import os
import re
import signal
import subprocess
import time


def mappings(pid):
    """(header fields, {field: kB}) for each mapping of `pid`."""
    current = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                if current:
                    yield current
                fields = line.split()
                current = (fields, {})
            else:
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[-1] == "kB":
                    current[1][key] = int(parts[0])
    if current:
        yield current


def kind(fields, size_kb, binary, largest_anon):
    path = fields[5] if len(fields) > 5 else ""
    if path == binary:
        return "binary " + ("text" if "x" in fields[1] else "read-only data and data")
    if path.startswith("/"):
        return os.path.basename(path)
    if path in ("[heap]", "[stack]", "[vdso]", "[vvar]"):
        return path
    if path.startswith("anon_inode:"):
        return path
    if size_kb == largest_anon:
        return "guest memory"
    return "anonymous (thread stacks, buffers)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait", type=float, default=1.5)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    process = subprocess.Popen(args.command, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(args.wait)
        binary = os.path.realpath(f"/proc/{process.pid}/exe")
        threads = len(os.listdir(f"/proc/{process.pid}/task"))
        maps = list(mappings(process.pid))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    anonymous = [m[1].get("Size", 0) for m in maps if len(m[0]) <= 5]
    largest_anon = max(anonymous, default=-1)
    totals = collections.Counter()
    for fields, values in maps:
        totals[kind(fields, values.get("Size", 0), binary, largest_anon)] += values.get("Rss", 0)
    print(f"{' '.join(args.command[:3])} ...: {threads} threads, RSS by mapping (kB)")
    for name, rss in totals.most_common():
        if rss:
            print(f"{rss:8d}  {name}")
    print(f"{sum(totals.values()):8d}  total")


if __name__ == "__main__":
    main()
