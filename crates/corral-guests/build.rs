//! Compiles every test guest in `guests/` into OUT_DIR: each as an ELF with a PVH note
//! (`NAME.elf`), and `hello` also shaped as a bzImage (`hello.bzImage`). Needs gcc, as, ld and
//! objcopy (Debian: build-essential); a missing tool fails the build with its name.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[&str] = &[
    "hello",
    "echo",
    "exit",
    "reset",
    "counter",
    "ticks",
    "triple-fault",
    "ctrl-alt-del",
    "acpi",
    "virtio-blk",
    "virtio-blk-bench",
    "virtio-blk-crash",
    "virtio-blk-dump",
    "virtio-net",
    "virtio-net-dhcp",
    "virtio-rng",
    "virtio-vsock",
    "vsock-agent",
    "forbidden-call",
    "snapshot-io",
    "dirty-pages",
    "dirtier",
    "migration-bench",
];

/// The guests that speak IPv4 over virtio-net, linked with `common/net.c`.
const NET_GUESTS: &[&str] = &["virtio-net", "virtio-net-dhcp"];
/// The guests that speak vsock, linked with `common/vsock.c`.
const VSOCK_GUESTS: &[&str] = &["virtio-vsock", "vsock-agent"];

const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-pie",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-mcmodel=small",
];

fn run(command: &mut Command) {
    let shown = format!("{command:?}");
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("building test guests: `{shown}` failed with {status}"),
        Err(err) => panic!(
            "building test guests: cannot run `{shown}`: {err} (install gcc and binutils, \
             e.g. `apt-get install build-essential`)"
        ),
    }
}

fn compile(source: &Path, object: &Path) {
    run(Command::new("gcc")
        .args(CFLAGS)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object));
}

fn link(script: &Path, objects: &[PathBuf], output: &Path) {
    run(Command::new("ld")
        .args([
            "-static",
            "-nostdlib",
            "--no-dynamic-linker",
            "-z",
            "noexecstack",
            "-T",
        ])
        .arg(script)
        .args(objects)
        .arg("-o")
        .arg(output));
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = manifest.join("../../guests");
    let common = guests.join("common");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed={}", guests.display());
    for entry in std::fs::read_dir(&common).expect("guests/common exists") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("readable").path().display()
        );
    }

    let boot = out.join("boot.o");
    compile(&common.join("boot.c"), &boot);
    let pvh = out.join("pvh.o");
    compile(&common.join("pvh.S"), &pvh);
    let virtio = out.join("virtio.o");
    compile(&common.join("virtio.c"), &virtio);
    let net = out.join("net.o");
    compile(&common.join("net.c"), &net);
    let vsock = out.join("vsock.o");
    compile(&common.join("vsock.c"), &vsock);
    for guest in GUESTS {
        let source = guests.join(format!("{guest}.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        let object = out.join(format!("{guest}.o"));
        compile(&source, &object);
        let mut objects = vec![pvh.clone(), boot.clone(), virtio.clone(), object];
        if NET_GUESTS.contains(guest) {
            objects.push(net.clone());
        }
        if VSOCK_GUESTS.contains(guest) {
            objects.push(vsock.clone());
        }
        link(
            &common.join("guest.ld"),
            &objects,
            &out.join(format!("{guest}.elf")),
        );
    }

    // hello as a bzImage: setup sectors, then the flat protected-mode image.
    let entry = out.join("bzimage-entry.o");
    compile(&common.join("bzimage-entry.S"), &entry);
    let image = out.join("hello-bz.elf");
    link(
        &common.join("bzimage.ld"),
        &[entry, boot, out.join("hello.o")],
        &image,
    );
    let payload = out.join("hello-bz.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&image)
        .arg(&payload));
    let setup_object = out.join("bzimage-setup.o");
    compile(&common.join("bzimage-setup.S"), &setup_object);
    let setup = out.join("bzimage-setup.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&setup_object)
        .arg(&setup));
    let mut bzimage = std::fs::read(&setup).expect("setup sectors were just built");
    assert_eq!(bzimage.len(), 1024, "the setup area is two sectors");
    bzimage.extend(std::fs::read(&payload).expect("payload was just built"));
    std::fs::write(out.join("hello.bzImage"), bzimage).expect("OUT_DIR is writable");
}
