//! `vmdk_stream IMAGE OUT.vmdk`: writes IMAGE as a streamOptimized VMDK (as `corral export` puts
//! it into an OVA) and prints the bytes written and the elapsed seconds, for measuring the writer
//! against `qemu-img convert -O vmdk -o subformat=streamOptimized`.

use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Instant;

use corral_disk::OpenOptions;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, target] = args.as_slice() else {
        eprintln!("usage: vmdk_stream IMAGE OUT.vmdk");
        return ExitCode::from(2);
    };
    let disk = match corral_disk::open(image.as_ref(), OpenOptions::read_only()) {
        Ok(disk) => disk,
        Err(err) => {
            eprintln!("vmdk_stream: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = match std::fs::File::create(target) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("vmdk_stream: cannot create {target}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let written = corral_disk::write_stream_optimized_vmdk(disk.as_ref(), &mut out, &mut |_| {
        ControlFlow::Continue(())
    });
    match written {
        Ok(bytes) => {
            println!("{bytes} bytes in {:.2} s", start.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vmdk_stream: {err}");
            ExitCode::FAILURE
        }
    }
}
