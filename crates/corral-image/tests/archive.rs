//! corral-image's tar unpacking and packing against GNU tar, and against malformed archives:
//! each of those gives one clear error and writes nothing outside the target.

mod common;

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_same_tree, make_tree, run, scratch, sh};
use corral_image::archive::{
    self, pack, unpack, ArchiveError, Limits, PackOptions, UnpackOptions, Unpacked,
};
use corral_testkit::require_root;

fn unpack_bytes(
    bytes: Vec<u8>,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, ArchiveError> {
    unpack(archive::decompress(Cursor::new(bytes))?, target, options)
}

#[test]
fn gnu_tar_tarballs_unpack_as_tar_x_unpacks_them() {
    require_root!();
    let dir = scratch("gnu-tar");
    let source = dir.path().join("source");
    make_tree(&source);
    for (name, compressor, xattrs) in [
        ("plain", "cat", true),
        ("gnu-format", "cat", false),
        ("gz", "gzip -c", true),
        ("xz", "xz -c", true),
        ("zst", "zstd -q -c", true),
    ] {
        let tarball = dir.path().join(format!("{name}.tar"));
        let flags = if xattrs {
            "--xattrs --xattrs-include='*'"
        } else {
            ""
        };
        sh(&format!(
            "tar {flags} --numeric-owner -C '{}' -cf - . | {compressor} > '{}'",
            source.display(),
            tarball.display()
        ));
        let expected = dir.path().join(format!("{name}-tar-x"));
        let actual = dir.path().join(format!("{name}-corral"));
        std::fs::create_dir(&expected).unwrap();
        std::fs::create_dir(&actual).unwrap();
        sh(&format!(
            "tar {flags} --numeric-owner -xpf '{}' -C '{}'",
            tarball.display(),
            expected.display()
        ));
        let file = std::fs::File::open(&tarball).unwrap();
        let unpacked = unpack(
            archive::decompress(file).unwrap(),
            &actual,
            &UnpackOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(unpacked.entries > 20, "{name}: {unpacked:?}");
        assert!(unpacked.bytes > 300_000, "{name}: {unpacked:?}");
        // The PAX format keeps sub-second mtimes; GNU's own format only seconds.
        assert_same_tree(&expected, &actual, xattrs);
    }
}

#[test]
fn a_packed_tree_is_the_same_bytes_every_time_and_unpacks_to_the_same_tree() {
    require_root!();
    let dir = scratch("pack");
    let source = dir.path().join("source");
    make_tree(&source);
    let pack_bytes = |prefix: &str, options: &PackOptions| {
        let mut builder = tar::Builder::new(Vec::new());
        pack(&mut builder, &source, Path::new(prefix), options).unwrap();
        builder.into_inner().unwrap()
    };
    let first = pack_bytes("", &PackOptions::default());
    assert_eq!(first, pack_bytes("", &PackOptions::default()));

    let ours = dir.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    unpack_bytes(first.clone(), &ours, &UnpackOptions::default()).unwrap();
    assert_same_tree(&source, &ours, false);

    // GNU tar reads it to the same tree too.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::write(dir.path().join("packed.tar"), &first).unwrap();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -xpf '{}' -C '{}'",
        dir.path().join("packed.tar").display(),
        theirs.display()
    ));
    assert_same_tree(&source, &theirs, false);

    // A prefix puts everything under it; a clamp caps mtimes.
    let clamped = pack_bytes(
        "rootfs",
        &PackOptions {
            clamp_mtime: Some(1_550_000_000),
        },
    );
    let mut archive = tar::Archive::new(&clamped[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        assert!(path.starts_with("rootfs"), "{}", path.display());
        assert!(
            entry.header().mtime().unwrap() <= 1_550_000_000,
            "{}",
            path.display()
        );
        assert_eq!(entry.header().username_bytes(), Some(&b""[..]));
    }
}

/// A tar entry written byte for byte, so names the tar crate would refuse can be made.
enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    Link(&'a str),
    Char,
}

fn raw_tar(entries: &[(&str, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        let (entry_type, link, data): (_, &str, &[u8]) = match kind {
            Kind::File(data) => (tar::EntryType::Regular, "", data),
            Kind::Dir => (tar::EntryType::Directory, "", b""),
            Kind::Symlink(target) => (tar::EntryType::Symlink, target, b""),
            Kind::Link(target) => (tar::EntryType::Link, target, b""),
            Kind::Char => (tar::EntryType::Char, "", b""),
        };
        header.set_entry_type(entry_type);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Unpacks `bytes` into `DIR/target` and returns the error, checking that nothing but the
/// target appeared in DIR.
fn refused(bytes: Vec<u8>, limits: Limits) -> (ArchiveError, tempfile::TempDir) {
    let dir = scratch("malformed");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let options = UnpackOptions {
        limits,
        layer: false,
    };
    let err = unpack_bytes(bytes, &target, &options).expect_err("the archive was accepted");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["target"], "{err}");
    (err, dir)
}

#[test]
fn a_dotdot_entry_is_refused() {
    require_root!();
    let (err, _dir) = refused(
        raw_tar(&[("../escape", Kind::File(b"x"))]),
        Limits::default(),
    );
    assert!(matches!(err, ArchiveError::PathEscape { .. }), "{err}");
    assert!(err.to_string().contains("../escape"), "{err}");
}

#[test]
fn a_file_through_a_symlink_to_the_root_is_refused() {
    require_root!();
    let victim = format!("tmp/corral-image-escape-{}", std::process::id());
    let (err, _dir) = refused(
        raw_tar(&[
            ("x", Kind::Symlink("/")),
            (&format!("x/{victim}"), Kind::File(b"pwned")),
        ]),
        Limits::default(),
    );
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    assert!(!Path::new("/").join(&victim).exists());
}

#[test]
fn a_file_through_a_symlink_to_a_parent_is_refused() {
    require_root!();
    let (err, _dir) = refused(
        raw_tar(&[
            ("up", Kind::Symlink("..")),
            ("up/escaped", Kind::File(b"pwned")),
        ]),
        Limits::default(),
    );
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    assert!(err.to_string().contains("up/escaped"), "{err}");
}

#[test]
fn a_symlink_already_in_the_target_is_not_followed() {
    require_root!();
    let dir = scratch("existing-link");
    let target = dir.path().join("target");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("lower")).unwrap();
    let err = unpack_bytes(
        raw_tar(&[("lower/file", Kind::File(b"pwned"))]),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // An entry replacing the link itself is fine: the link goes, nothing outside is touched.
    unpack_bytes(
        raw_tar(&[("lower", Kind::File(b"plain"))]),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(std::fs::read(target.join("lower")).unwrap(), b"plain");
    assert!(outside.is_dir());
}

#[test]
fn a_hard_link_to_a_host_file_is_refused() {
    require_root!();
    let (err, dir) = refused(
        raw_tar(&[("passwd", Kind::Link("/etc/passwd"))]),
        Limits::default(),
    );
    assert!(matches!(err, ArchiveError::HardLinkMissing { .. }), "{err}");
    assert!(err.to_string().contains("etc/passwd"), "{err}");
    assert!(!dir.path().join("target/passwd").exists());

    let (err, _dir) = refused(
        raw_tar(&[("d/", Kind::Dir), ("l", Kind::Link("d"))]),
        Limits::default(),
    );
    assert!(
        matches!(err, ArchiveError::HardLinkToDirectory { .. }),
        "{err}"
    );
    let (err, _dir) = refused(
        raw_tar(&[
            ("up", Kind::Symlink("/etc")),
            ("l", Kind::Link("up/passwd")),
        ]),
        Limits::default(),
    );
    assert!(matches!(err, ArchiveError::ThroughSymlink { .. }), "{err}");
}

#[test]
fn device_nodes_are_skipped_under_dev_and_refused_elsewhere() {
    require_root!();
    let dir = scratch("devices");
    let unpacked = unpack_bytes(
        raw_tar(&[("./dev/", Kind::Dir), ("./dev/sda", Kind::Char)]),
        dir.path(),
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(unpacked.skipped_devices, [PathBuf::from("dev/sda")]);
    assert!(!dir.path().join("dev/sda").exists());

    let (err, _dir) = refused(raw_tar(&[("disk", Kind::Char)]), Limits::default());
    assert!(
        matches!(err, ArchiveError::DeviceOutsideDev { .. }),
        "{err}"
    );
}

#[test]
fn a_tar_bomb_stops_at_the_byte_limit() {
    require_root!();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut builder = tar::Builder::new(&mut gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(256 << 20);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(256 << 20))
            .unwrap();
        builder.finish().unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4 << 20);
    let limits = Limits {
        max_bytes: 16 << 20,
        ..Limits::default()
    };
    let (err, dir) = refused(bomb, limits);
    assert!(
        matches!(err, ArchiveError::TooManyBytes { max, .. } if max == 16 << 20),
        "{err}"
    );
    assert!(err.to_string().contains("max_bytes"), "{err}");
    // Refused from its header, before a byte was written.
    assert!(std::fs::metadata(dir.path().join("target/zeros")).is_err());
}

#[test]
fn too_many_entries_are_refused() {
    require_root!();
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), Kind::File(b"x")))
        .collect();
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let (err, _dir) = refused(raw_tar(&entries), limits);
    assert!(
        matches!(err, ArchiveError::TooManyEntries { max: 10 }),
        "{err}"
    );
    assert!(err.to_string().contains("max_entries"), "{err}");
}

#[test]
fn truncated_archives_are_refused() {
    require_root!();
    let data = vec![7u8; 5000];
    let whole = raw_tar(&[("a", Kind::File(&data)), ("b", Kind::File(&data))]);
    // Inside b's data; inside b's header.
    for cut in [512 * 13 + 100, 512 * 11 + 100] {
        let (err, _dir) = refused(whole[..cut].to_vec(), Limits::default());
        assert!(
            matches!(err, ArchiveError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
    // Ending between entries, without the end-of-archive blocks or even the last padding, is
    // a complete archive (Go's archive/tar reads it; `umoci insert` writes it).
    let dir = scratch("no-end-marker");
    let unpacked = unpack_bytes(
        whole[..512 * 12 + 5000].to_vec(),
        dir.path(),
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(unpacked.entries, 2);
    // Compressed streams cut short.
    let dir = scratch("truncated");
    let source = dir.path().join("source");
    make_tree(&source);
    for compressor in ["gzip -c", "xz -c", "zstd -q -c"] {
        let bytes = sh(&format!(
            "tar -C '{}' -cf - . | {compressor}",
            source.display()
        ));
        let (err, _dir) = refused(bytes[..bytes.len() / 2].to_vec(), Limits::default());
        assert!(
            matches!(err, ArchiveError::Truncated { .. } | ArchiveError::Read(_)),
            "{compressor}: {err}"
        );
    }
}

#[test]
fn a_huge_extended_header_is_refused_before_it_fills_memory() {
    require_root!();
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(64 << 20);
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.resize(bytes.len() + (64 << 20), b'a');
    let (err, _dir) = refused(bytes, Limits::default());
    assert!(matches!(err, ArchiveError::HeaderTooLarge { .. }), "{err}");
}

#[test]
fn layer_whiteouts_hide_earlier_layers_only() {
    require_root!();
    let dir = scratch("whiteouts");
    let root = dir.path();
    let layer = UnpackOptions {
        layer: true,
        ..UnpackOptions::default()
    };
    unpack_bytes(
        raw_tar(&[
            ("a/", Kind::Dir),
            ("a/old", Kind::File(b"1")),
            ("a/sub/", Kind::Dir),
            ("a/sub/old", Kind::File(b"1")),
            ("b/", Kind::Dir),
            ("b/gone", Kind::File(b"1")),
            ("b/kept", Kind::File(b"1")),
            ("c", Kind::File(b"1")),
        ]),
        root,
        &layer,
    )
    .unwrap();
    unpack_bytes(
        raw_tar(&[
            ("a/", Kind::Dir),
            ("a/new", Kind::File(b"2")),
            ("a/sub/", Kind::Dir),
            ("a/sub/new", Kind::File(b"2")),
            ("a/.wh..wh..opq", Kind::File(b"")),
            ("b/.wh.gone", Kind::File(b"")),
            (".wh.c", Kind::File(b"")),
            ("d", Kind::File(b"2")),
            (".wh.d", Kind::File(b"")),
        ]),
        root,
        &layer,
    )
    .unwrap();
    let listing =
        String::from_utf8(sh(&format!("cd '{}' && find . | sort", root.display()))).unwrap();
    assert_eq!(
        listing, ".\n./a\n./a/new\n./a/sub\n./a/sub/new\n./b\n./b/kept\n./d\n",
        "{listing}"
    );
    // Outside a layer, whiteouts are plain files.
    let plain = scratch("whiteouts-plain");
    unpack_bytes(
        raw_tar(&[(".wh.c", Kind::File(b""))]),
        plain.path(),
        &UnpackOptions::default(),
    )
    .unwrap();
    assert!(plain.path().join(".wh.c").exists());
}

#[test]
fn gnu_tar_lists_what_append_file_writes() {
    let mut builder = tar::Builder::new(Vec::new());
    archive::append_file(
        &mut builder,
        Path::new("metadata.yaml"),
        b"architecture: amd64\n",
        0o644,
        1_700_000_000,
    )
    .unwrap();
    let bytes = builder.into_inner().unwrap();
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "-tvf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&bytes).unwrap();
    let output = tar.wait_with_output().unwrap();
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(listing.starts_with("-rw-r--r-- 0/0"), "{listing}");
    assert!(listing.contains("metadata.yaml"), "{listing}");
    let _ = run;
}
