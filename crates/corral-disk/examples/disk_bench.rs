//! The I/O pattern of `qemu-img bench` (depth 1) through corral's `Disk`, for `bench/disk.sh`:
//! `disk_bench IMAGE read|write COUNT SIZE STEP [FLUSH_EVERY]` issues COUNT requests of SIZE
//! bytes, each STEP bytes after the previous one (wrapping at the end of the disk), flushing after
//! every FLUSH_EVERY writes (`qemu-img bench --flush-interval`) and at the end, and prints the
//! elapsed seconds.

use std::process::ExitCode;
use std::time::Instant;

use corral_disk::OpenOptions;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (image, mode, count, size, step, flush_every) = match args.as_slice() {
        [image, mode, count, size, step] => (image, mode, count, size, step, "0"),
        [image, mode, count, size, step, flush_every] => {
            (image, mode, count, size, step, flush_every.as_str())
        }
        _ => {
            eprintln!("usage: disk_bench IMAGE read|write COUNT SIZE STEP [FLUSH_EVERY]");
            return ExitCode::from(2);
        }
    };
    let (Ok(count), Ok(size), Ok(step), Ok(flush_every)) = (
        count.parse::<u64>(),
        size.parse::<usize>(),
        step.parse::<u64>(),
        flush_every.parse::<u64>(),
    ) else {
        eprintln!("disk_bench: COUNT, SIZE, STEP and FLUSH_EVERY must be numbers");
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
    for done in 1..=count {
        let result = if write {
            disk.write_at(&buf, offset)
                .and_then(|()| match flush_every {
                    0 => Ok(()),
                    every if done % every == 0 => disk.flush(),
                    _ => Ok(()),
                })
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
