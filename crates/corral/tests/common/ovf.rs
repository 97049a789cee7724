//! Helpers of the OVF tests (`ovf_import.rs`, `ovf_export.rs`): programs run for their output,
//! raw disks with known content, a network for nics to name.

use std::path::Path;
use std::process::Command;

use super::CorralRoot;

/// Runs `program`, asserting it succeeds; its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A sparse raw disk of `mib` MiB with `seed`'s pattern in its first 64 KiB and at 1 MiB.
pub fn raw_disk(path: &Path, mib: u64, seed: u8) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(mib << 20).unwrap();
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i as u8) ^ seed).collect();
    file.write_all_at(&pattern, 0).unwrap();
    file.write_all_at(&pattern, 1 << 20).unwrap();
}

/// An unmanaged network `lan` on a bridge nobody makes: enough for nics to name it at import.
pub fn lan_network(root: &CorralRoot) {
    let dir = root.path().join("networks/lan");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("network.toml"),
        "name = \"lan\"\nkind = \"unmanaged\"\nbridge = \"corralovf0\"\nnat = false\n",
    )
    .unwrap();
}
