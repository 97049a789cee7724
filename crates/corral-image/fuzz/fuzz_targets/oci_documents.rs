//! Feeds arbitrary OCI documents to corral's OCI import: the input is split at NUL bytes into
//! index.json, a manifest (or nested index) and a config; `@M` and `@C` in the text become the
//! manifest's and config's real digests and sizes, so the fuzzer reaches past the digest checks.
//! Every outcome is fine except a panic, an abort or a hang.

#![no_main]

use corral_image::archive::Limits;
use corral_image::oci;
use corral_image::progress::NoProgress;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn substitute(text: &[u8], from: &str, digest: &str, size: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    text.replace(&format!("{from}S"), &size.to_string())
        .replace(from, digest)
        .into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let index = parts.next().unwrap_or_default();
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    let layout = scratch.path().join("layout");
    let rootfs = scratch.path().join("rootfs");
    let blobs = layout.join("blobs/sha256");
    if std::fs::create_dir_all(&blobs).is_err() || std::fs::create_dir(&rootfs).is_err() {
        return;
    }
    let config_digest = digest(config);
    let manifest = substitute(manifest, "@C", &config_digest, config.len());
    let manifest_digest = digest(&manifest);
    let index = substitute(index, "@M", &manifest_digest, manifest.len());
    for (name, bytes) in [
        (blobs.join(&config_digest[7..]), config),
        (blobs.join(&manifest_digest[7..]), &manifest[..]),
        (layout.join("index.json"), &index[..]),
        (layout.join("oci-layout"), &br#"{"imageLayoutVersion":"1.0.0"}"#[..]),
    ] {
        if std::fs::write(name, bytes).is_err() {
            return;
        }
    }
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let _ = oci::import(&layout, None, &rootfs, &limits, &NoProgress);
});
