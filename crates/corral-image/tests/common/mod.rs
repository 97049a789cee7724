//! Shared by the image tests: a small tree with every kind of metadata, a comparison of two
//! trees (`diff -r` plus a walk of modes, owners, mtimes, xattrs and links), and commands.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file capability (`cap_net_raw+ep`), as `setcap` writes it: struct vfs_cap_data, revision 2.
pub const NET_RAW_CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

pub fn run(command: &mut Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub fn sh(script: &str) -> Vec<u8> {
    run(Command::new("bash").arg("-euc").arg(script))
}

/// Fills `root` with files of several modes (setuid, setgid, sticky), owners, extended
/// attributes (a user one and a file capability), symlinks (relative, absolute, dangling), a hard
/// link, an empty directory with a narrow mode, a long name and mtimes in the past.
pub fn make_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let quoted = root.display();
    sh(&format!(
        r#"cd '{quoted}'
        mkdir -p bin etc/app usr/lib/deep/er/still var/empty tmp
        printf 'hello\n' > etc/app/config
        head -c 300000 /dev/urandom > usr/lib/blob
        printf '#!/bin/sh\necho hi\n' > bin/tool
        cp bin/tool bin/setuid && chmod 4755 bin/setuid
        cp bin/tool bin/setgid && chmod 2711 bin/setgid
        chmod 755 bin/tool
        chmod 1777 tmp
        chmod 700 var/empty
        ln bin/tool bin/tool-link
        ln -s ../etc/app/config bin/relative
        ln -s /etc/app/config bin/absolute
        ln -s nowhere bin/dangling
        printf 'owned\n' > etc/app/owned && chown 1000:1001 etc/app/owned
        chown 1000:1001 usr/lib/deep
        name=$(printf 'n%.0s' $(seq 1 150)); printf 'long\n' > usr/lib/deep/er/still/$name
        : > etc/empty-file
        touch -h -d @1000000000 bin/relative
        find . -mindepth 1 -not -type l -exec touch -d @1600000000 {{}} +
        touch -d @1500000000.5 etc/app/config
        touch -d @1600000000 .
        "#
    ));
    xattr::set(root.join("etc/app/config"), "user.colour", b"blue").unwrap();
    xattr::set(root.join("etc/app"), "user.dir", b"yes").unwrap();
    xattr::set(
        root.join("bin/tool"),
        "security.capability",
        &NET_RAW_CAPABILITY,
    )
    .unwrap();
    // Setting xattrs changed ctime only; mtimes stay.
}

/// What a walk records of one path.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    nlink: u64,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every path under `root` (relative; the root itself as "") with its metadata. `with_nanos`:
/// compare sub-second mtimes too (formats that keep them).
pub fn walk(root: &Path, with_nanos: bool) -> BTreeMap<PathBuf, Node> {
    let mut nodes = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let path = root.join(&relative);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        if kind.is_dir() {
            for child in std::fs::read_dir(&path).unwrap() {
                stack.push(relative.join(child.unwrap().file_name()));
            }
        }
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&path).unwrap() {
            let name_text = String::from_utf8_lossy(name.as_bytes()).into_owned();
            if name_text.starts_with("user.") || name_text.starts_with("security.") {
                xattrs.insert(
                    name_text,
                    xattr::get(&path, &name).unwrap().unwrap_or_default(),
                );
            }
        }
        nodes.insert(
            relative,
            Node {
                kind: if kind.is_dir() {
                    "dir"
                } else if kind.is_symlink() {
                    "symlink"
                } else if kind.is_file() {
                    "file"
                } else {
                    "other"
                },
                mode: meta.permissions().mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), if with_nanos { meta.mtime_nsec() } else { 0 }),
                size: if kind.is_dir() { 0 } else { meta.len() },
                nlink: if kind.is_dir() { 0 } else { meta.nlink() },
                link: kind
                    .is_symlink()
                    .then(|| std::fs::read_link(&path).unwrap()),
                xattrs,
            },
        );
    }
    nodes
}

/// Asserts that two trees hold the same content (`diff -r`) and metadata (the walk).
pub fn assert_same_tree(expected: &Path, actual: &Path, with_nanos: bool) {
    run(Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(expected)
        .arg(actual));
    let expected_nodes = walk(expected, with_nanos);
    let actual_nodes = walk(actual, with_nanos);
    for (path, node) in &expected_nodes {
        assert_eq!(Some(node), actual_nodes.get(path), "{}", path.display());
    }
    assert_eq!(
        expected_nodes.keys().collect::<Vec<_>>(),
        actual_nodes.keys().collect::<Vec<_>>()
    );
}

/// A scratch directory whose name carries the test process's pid.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("corral-image-{name}-{}-", std::process::id()))
        .tempdir()
        .unwrap()
}
