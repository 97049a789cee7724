"""Lists the functions a VM's run executes in corral-vmm, for the linker to lay out first.

    python3 scripts/vmm-symbol-order.py BINARY GUESTS_DIR OUT

A VMM process pages its code in 64 KiB around each page fault, so the code it runs, scattered
through the binary, made it resident almost whole (1.9 of 2.0 MiB of text for 0.4 MiB run).
scripts/build-static.sh --vmm relinks corral-vmm with this list as lld's
--symbol-ordering-file, which puts those functions side by side at the start of the text.

The runs are those of bench/vmm-start and of an instance: the reset guest (flags, jailed, an
exit record) and the counter guest from a TOML config as corral start writes it (console socket
and log, control socket asked for `info`, then `kill`), each under valgrind's callgrind, which
names every function that ran. valgrind cannot run under seccomp filters (its own calls would
trap), so those runs are without them and every function of the filters' code (its symbols
name `seccomp`) is added. Needs valgrind and /dev/kvm; jailed only as root. GUESTS_DIR holds the
test guests (corral-guests' build output).
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 120


def callgrind(binary, args, scratch, interact=None):
    """The mangled names of the functions `binary ARGS` ran, in the order callgrind met them."""
    # The output file is written at exit, by then as the jail's user: made writable for it first.
    out = os.path.join(scratch, "callgrind.out")
    with open(out, "w"):
        pass
    os.chmod(out, 0o666)
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
         binary, "--no-seccomp"] + args,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if interact:
            interact(process)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with open(out) as text:
        names = re.findall(r"^c?fn=\(\d+\) (.+)$", text.read(), re.MULTILINE)
    if not names:
        raise SystemExit(f"vmm-symbol-order: callgrind recorded nothing for {args}: "
                         f"{stderr.decode(errors='replace')[-2000:]}")
    return names


def wait_for(path, process):
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path):
        if process.poll() is not None:
            raise SystemExit(f"vmm-symbol-order: corral-vmm ended (status {process.returncode}) "
                             f"before its control socket {path} appeared: "
                             f"{process.stderr.read().decode(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"vmm-symbol-order: {path} did not appear in {TIMEOUT} s")
        time.sleep(0.1)


def control(path, requests):
    """Sends each request on the control socket and reads its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        reader = client.makefile("r")
        for request in requests:
            client.sendall(json.dumps({"request": request}).encode() + b"\n")
            reader.readline()


def jail_dir(scratch, name, jailed):
    path = os.path.join(scratch, name)
    os.mkdir(path)
    return path, (["--jail", path] if jailed else [])


def main():
    binary, guests, out = (os.path.abspath(arg) for arg in sys.argv[1:4])
    jailed = os.geteuid() == 0
    names = []
    with tempfile.TemporaryDirectory(prefix="corral-vmm-order.") as scratch:
        os.chmod(scratch, 0o755)
        run, jail = jail_dir(scratch, "reset", jailed)
        names += callgrind(binary, [
            "--kernel", os.path.join(guests, "reset.elf"), "--memory", "128M", "--serial", "none",
            "--on-reboot", "destroy", "--exit-file", os.path.join(run, "exit.json")] + jail, run)

        run, jail = jail_dir(scratch, "instance", jailed)
        config = os.path.join(run, "vm.toml")
        with open(config, "w") as file:
            file.write(
                f'kernel = "{os.path.join(guests, "counter.elf")}"\nmemory = "32M"\nvcpus = 1\n'
                f'serial = {{ socket = "{os.path.join(run, "console.sock")}" }}\n'
                f'console_log = "{os.path.join(run, "console.log")}"\n'
                f'control_socket = "{os.path.join(run, "control.sock")}"\n')
        control_socket = os.path.join(run, "control.sock")

        def info_then_kill(process):
            wait_for(control_socket, process)
            control(control_socket, ["status", "info", "kill"])

        names += callgrind(binary, [
            "--config", config, "--exit-file", os.path.join(run, "exit.json"),
            "--log-file", os.path.join(run, "supervisor.log")] + jail, run, info_then_kill)

    symbols = subprocess.run(["nm", "--defined-only", binary], check=True, capture_output=True,
                             text=True).stdout.split("\n")
    text = {line.split()[2] for line in symbols if len(line.split()) == 3
            and line.split()[1] in "tTwW"}
    seccomp = sorted(name for name in text if "seccomp" in name)
    ordered = list(dict.fromkeys(name for name in names + seccomp if name in text))
    with open(out, "w") as file:
        file.write("\n".join(ordered) + "\n")
    print(f"vmm-symbol-order: {len(ordered)} functions first", file=sys.stderr)


if __name__ == "__main__":
    main()
