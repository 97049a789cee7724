//! The I/O pattern of `qemu-img bench` (depth 1) through corral's `Disk`, for `bench/disk.sh`:
//! `disk_bench IMAGE read|write COUNT SIZE STEP` issues COUNT requests of SIZE bytes, each STEP
//! bytes after the previous one (wrapping at the end of the disk), then flushes, and prints the
//! elapsed seconds.

use std::process::ExitCode;
use std::time::Instant;

use corral_disk::OpenOptions;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, mode, count, size, step] = args.as_slice() else {
        eprintln!("usage: disk_bench IMAGE read|write COUNT SIZE STEP");
        return ExitCode::from(2);
    };
    let (Ok(count), Ok(size), Ok(step)) = (
        count.parse::<u64>(),
        size.parse::<usize>(),
        step.parse::<u64>(),
    ) else {
        eprintln!("disk_bench: COUNT, SIZE and STEP must be numbers");
        return ExitCode::from(2);
    };
    let write = mode == "write";
    let options = if write {
        OpenOptions::writable()
    } else {
        OpenOptions::read_only()
    };
    let mut disk = match corral_disk::open(image.as_ref(), options) {
        Ok(disk) => disk,
        Err(err) => {
            eprintln!("disk_bench: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0xa5u8; size];
    let span = disk.virtual_size() - disk.virtual_size() % size as u64;
    let start = Instant::now();
    let mut offset = 0;
    for _ in 0..count {
        let result = if write {
            disk.write_at(&buf, offset)
        } else {
            disk.read_at(&mut buf, offset)
        };
        if let Err(err) = result {
            eprintln!("disk_bench: {err}");
            return ExitCode::FAILURE;
        }
        offset = (offset + step) % span;
    }
    if let Err(err) = disk.flush() {
        eprintln!("disk_bench: {err}");
        return ExitCode::FAILURE;
    }
    println!("{:.3}", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
