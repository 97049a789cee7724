//! `write_stream_optimized_vmdk`: the streamOptimized VMDK corral writes into an OVA is read back
//! by qemu-img (format, create type, virtual size, a clean check and identical content), is the
//! same bytes on every run, stays small for an empty disk, and stops with typed errors when
//! cancelled or when its destination fails.

mod common;

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::*;
use corral_disk::{
    create_qcow2, write_stream_optimized_vmdk, BackingPolicy, CopyProgress, Disk, DiskError,
    DiskFormat, OpenOptions, Qcow2CreateOptions,
};
use corral_testkit::require_program;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn open(path: &Path) -> Box<dyn Disk> {
    corral_disk::open(path, OpenOptions::read_only()).expect("open source")
}

/// Bytes no compressor can shrink (xorshift64), so grains are written at full size.
fn random(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A sparse raw file of `size` bytes with `pieces` (offset, bytes) written into it.
fn sparse_raw(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let file = std::fs::File::create(path).expect("create raw");
    file.set_len(size).expect("size raw");
    for (offset, bytes) in pieces {
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, *offset).expect("write raw");
    }
}

/// Writes `source` as a streamOptimized VMDK at `target`, checking the count it returns.
fn export(source: &Path, target: &Path) -> u64 {
    let disk = open(source);
    let mut file = std::fs::File::create(target).expect("create vmdk");
    let mut last = None;
    let written = write_stream_optimized_vmdk(disk.as_ref(), &mut file, &mut |p| {
        last = Some(p);
        ControlFlow::Continue(())
    })
    .expect("write vmdk");
    let total = disk.virtual_size();
    assert_eq!(last, Some(CopyProgress { done: total, total }));
    assert_eq!(written, std::fs::metadata(target).expect("stat vmdk").len());
    written
}

/// qemu-img reads `vmdk` as a clean streamOptimized VMDK of `source`'s size and content, and a
/// second export gives the same bytes. Returns the VMDK's size.
fn assert_qemu_reads_export(source: &Path, source_format: &str, dir: &Path) -> u64 {
    let vmdk = dir.join("disk.vmdk");
    let written = export(source, &vmdk);

    let info: serde_json::Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", path_str(&vmdk)],
    ))
    .expect("qemu-img info json");
    let source_info: serde_json::Value = serde_json::from_str(&run(
        "qemu-img",
        &["info", "--output=json", path_str(source)],
    ))
    .expect("qemu-img info json");
    assert_eq!(info["format"], "vmdk", "{info:#}");
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info:#}"
    );
    assert_eq!(
        info["virtual-size"], source_info["virtual-size"],
        "{info:#}"
    );
    assert_qemu_check_clean(&vmdk);
    assert_qemu_compare_formats(&vmdk, "vmdk", source, source_format);

    assert_forward_reader_sees(
        &std::fs::read(&vmdk).expect("read vmdk"),
        &read_all(open(source).as_ref()),
    );

    let again = dir.join("again.vmdk");
    export(source, &again);
    assert!(
        std::fs::read(&vmdk).expect("read vmdk") == std::fs::read(&again).expect("read vmdk"),
        "two exports of the same disk differ"
    );
    written
}

/// Reads `vmdk` front to back as VirtualBox imports an OVA's disk (it never seeks back, so it
/// follows the markers from the header's overhead on, never the grain tables) and checks that it
/// rebuilds `expected` and ends with the footer and the end-of-stream marker.
fn assert_forward_reader_sees(vmdk: &[u8], expected: &[u8]) {
    let u32_at = |at: usize| u32::from_le_bytes(vmdk[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(vmdk[at..at + 8].try_into().expect("8 bytes"));
    let sector = 512;
    let grain = 64 * KIB as usize;
    assert_eq!(&vmdk[..4], b"KDMV");
    assert_eq!(
        u64_at(56),
        u64::MAX,
        "the leading header's directory is at the end"
    );
    let tables = (u64_at(12) as usize).div_ceil(128 * 512);
    let mut image = vec![0u8; expected.len().next_multiple_of(grain)];
    let mut at = u64_at(64) as usize * sector;
    let mut last_grain = None;
    loop {
        let (lba, size) = (u64_at(at), u32_at(at + 8) as usize);
        if size > 0 {
            let index = lba as usize * sector / grain;
            assert_eq!(lba % 128, 0, "grain marker at {at} is not on a grain");
            assert!(last_grain < Some(index), "grains go backwards at {at}");
            last_grain = Some(index);
            let mut inflater = flate2::read::ZlibDecoder::new(&vmdk[at + 12..at + 12 + size]);
            let mut data = Vec::new();
            io::Read::read_to_end(&mut inflater, &mut data).expect("inflate grain");
            assert_eq!(data.len(), grain, "grain at {at} is not whole");
            image[index * grain..(index + 1) * grain].copy_from_slice(&data);
            at += (12 + size).next_multiple_of(sector);
            continue;
        }
        match u32_at(at + 12) {
            0 => break,
            1 => at += sector + 4 * sector,
            2 => at += sector + (tables * 4).next_multiple_of(sector),
            3 => {
                assert_eq!(&vmdk[at + sector..at + sector + 4], b"KDMV", "footer");
                at += 2 * sector;
            }
            kind => panic!("unknown marker {kind} at {at}"),
        }
    }
    assert_eq!(
        at + sector,
        vmdk.len(),
        "the end-of-stream marker is not last"
    );
    // memcmp first: a byte-wise search for the difference is slow in a debug build
    if image[..expected.len()] != *expected {
        assert_same_content(&image[..expected.len()], expected, "forward read");
    }
}

#[test]
fn raw_disk_with_scattered_data_and_holes_is_read_back_identical_by_qemu() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    sparse_raw(
        &source,
        128 * MIB,
        &[
            (0, random(4 * KIB as usize, 1)),
            // across a grain boundary, not sector-aligned
            (MIB - 100, random(300, 2)),
            // larger than one read, in the second grain table
            (37 * MIB + 512, random(5 * MIB as usize, 3)),
            // text that compresses, then a grain of zeroes inside a data range
            (90 * MIB, pattern(90 * MIB, 256 * KIB as usize, 4)),
            (90 * MIB + 320 * KIB, vec![0; 64 * KIB as usize]),
            (128 * MIB - 7, random(7, 5)),
        ],
    );
    let written = assert_qemu_reads_export(&source, "raw", dir.path());
    // The holes cost nothing: the data is about 5.6 MiB, the disk 128 MiB.
    assert!(written < 7 * MIB, "{written} bytes");
}

#[test]
fn sizes_that_are_not_whole_grains_or_sectors_are_padded() {
    require_program!("qemu-img");
    for size in [5 * MIB + 1536, 3 * MIB + 1000, 100] {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.raw");
        // data up to the very last byte, in the last, partial grain
        let tail = size.min(10 * KIB);
        sparse_raw(&source, size, &[(size - tail, random(tail as usize, size))]);
        assert_qemu_reads_export(&source, "raw", dir.path());
    }
}

#[test]
fn an_all_zero_disk_stays_a_few_kib() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("zero.raw");
    // 4 MiB of written zeroes (data ranges that hold no data) in a 256 MiB hole.
    sparse_raw(
        &source,
        256 * MIB,
        &[(100 * MIB, vec![0; 4 * MIB as usize])],
    );
    let written = assert_qemu_reads_export(&source, "raw", dir.path());
    assert!(written <= 8 * KIB, "{written} bytes");
}

#[test]
fn qcow2_with_a_backing_file_is_flattened() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    qcow2(&base, 64 * MIB, None);
    qcow2(&overlay, 64 * MIB, Some(&base));
    {
        let mut disk = corral_disk::open(&base, OpenOptions::writable()).expect("open base");
        disk.write_at(&random(3 * MIB as usize, 7), 2 * MIB)
            .expect("write base");
        disk.write_at(&random(MIB as usize, 8), 40 * MIB)
            .expect("write base");
        disk.flush().expect("flush base");
    }
    {
        let mut disk = corral_disk::open(&overlay, OpenOptions::writable()).expect("open overlay");
        // over the base's data, half in and half out of it
        disk.write_at(&random(2 * MIB as usize, 9), 4 * MIB)
            .expect("write overlay");
        // zeroes hiding the base's data must stay zeroes
        disk.write_zeroes(40 * MIB, 512 * KIB)
            .expect("zero overlay");
        disk.write_at(&random(64 * KIB as usize, 10), 63 * MIB)
            .expect("write overlay");
        disk.flush().expect("flush overlay");
    }
    assert_qemu_reads_export(&overlay, "qcow2", dir.path());
}

fn qcow2(path: &Path, size: u64, backing: Option<&Path>) {
    create_qcow2(
        path,
        &Qcow2CreateOptions {
            size: Some(size),
            backing_file: backing.map(Path::to_path_buf),
            backing_format: backing.map(|_| DiskFormat::Qcow2),
            backing_policy: BackingPolicy::Any,
            ..Qcow2CreateOptions::default()
        },
    )
    .expect("create qcow2");
}

#[test]
fn cancelling_through_progress_stops_with_the_cancel_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    sparse_raw(&source, 16 * MIB, &[(0, random(8 * MIB as usize, 11))]);
    let disk = open(&source);
    let mut calls = 0;
    let mut out = Vec::new();
    let result = write_stream_optimized_vmdk(disk.as_ref(), &mut out, &mut |_| {
        calls += 1;
        ControlFlow::Break(())
    });
    assert!(
        matches!(result, Err(DiskError::VmdkCancelled)),
        "{result:?}"
    );
    assert_eq!(calls, 1, "the writer went on after the cancel");
}

/// A destination that takes `room` bytes, then fails like a full disk.
struct FullDisk {
    room: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let taken = buf.len().min(self.room);
        self.room -= taken;
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_destination_gives_the_write_error_with_its_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    sparse_raw(&source, 16 * MIB, &[(0, random(3 * MIB as usize, 12))]);
    let disk = open(&source);
    // Full at once, within the first buffered write, and at the final flush.
    for room in [0, 3000, 5 * MIB as usize / 2] {
        let result =
            write_stream_optimized_vmdk(disk.as_ref(), &mut FullDisk { room }, &mut |_| {
                ControlFlow::Continue(())
            });
        match result {
            Err(DiskError::VmdkWrite { source }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC), "room {room}")
            }
            other => panic!("room {room}: {other:?}"),
        }
    }
}

#[test]
fn size_next_to_qemu_img_s_own_stream_optimized_output() {
    require_program!("qemu-img");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.raw");
    let mut pieces = Vec::new();
    for i in 0..16u64 {
        pieces.push((i * 4 * MIB, random(MIB as usize, 20 + i)));
        pieces.push((
            i * 4 * MIB + 2 * MIB,
            pattern(i * 4 * MIB, MIB as usize, i as u8),
        ));
    }
    sparse_raw(&source, 64 * MIB, &pieces);
    let ours = export(&source, &dir.path().join("ours.vmdk"));
    let qemu_path: PathBuf = dir.path().join("qemu.vmdk");
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            path_str(&source),
            path_str(&qemu_path),
        ],
    );
    let qemu = std::fs::metadata(&qemu_path).expect("stat").len();
    println!("streamOptimized VMDK of 32 MiB of data: corral {ours} bytes, qemu-img {qemu} bytes");
    // Both write zlib at level 6; qemu pads its metadata to 64 KiB, so corral is never much larger.
    assert!(ours <= qemu + qemu / 20, "corral {ours} vs qemu-img {qemu}");
}
