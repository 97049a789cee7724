//! The tree a build starts from: the host's static busybox, a Debian system made by
//! mmdebstrap, another image of the store, or an OCI image.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use corral_error::PathIoError;
use corral_image::metadata::ContainerDefaults;

use super::spec::Source;
use super::{BuildError, Context};

/// Where Debian's `busybox-static` installs the static busybox.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// mmdebstrap's own default, used when the host's apt sources name no Debian archive.
const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Fills `rootfs` (which must not exist) from `source`; returns the container defaults it
/// brings.
pub fn prepare(
    context: &mut Context,
    source: &Source,
    rootfs: &Path,
) -> Result<ContainerDefaults, BuildError> {
    match source {
        Source::Busybox => {
            busybox(rootfs)?;
            Ok(ContainerDefaults {
                cmd: vec!["/bin/sh".into()],
                ..ContainerDefaults::default()
            })
        }
        Source::Debian {
            suite,
            variant,
            packages,
            mirror,
        } => {
            let mirror = match mirror {
                Some(mirror) => mirror.clone(),
                None => host_debian_mirror(suite, Path::new("/etc/apt")),
            };
            let mut command = Command::new("mmdebstrap");
            command.arg(format!("--variant={variant}"));
            if !packages.is_empty() {
                command.arg(format!("--include={}", packages.join(",")));
            }
            command.arg(suite).arg(rootfs).arg(&mirror);
            context
                .log
                .note(&format!("mmdebstrap {suite} ({variant}) from {mirror}"));
            context.log.run_checked("mmdebstrap", command)?;
            Ok(ContainerDefaults {
                cmd: vec!["/sbin/init".into()],
                init: true,
                ..ContainerDefaults::default()
            })
        }
        Source::Image(reference) => {
            let image = context
                .store
                .resolve(reference)
                .map_err(BuildError::Store)?;
            let from = image.rootfs().map_err(BuildError::Store)?;
            context
                .log
                .note(&format!("copying image {}", image.display_name()));
            crate::copy::copy_tree(&from, rootfs, &corral_image::progress::NoProgress)
                .map_err(|e| BuildError::Copy(Box::new(e)))?;
            Ok(image.metadata().container.clone())
        }
        Source::Oci(path) => {
            let path = context.plan.path(path);
            context
                .log
                .note(&format!("importing the OCI image {}", path.display()));
            std::fs::create_dir(rootfs).map_err(BuildError::io("create", rootfs))?;
            let image = corral_image::oci::import(
                &path,
                None,
                rootfs,
                &corral_image::archive::Limits::default(),
                context.progress,
            )
            .map_err(BuildError::Oci)?;
            Ok(image.metadata.container)
        }
    }
}

/// A minimal system: the static busybox, one link per applet where busybox installs it, the
/// directories a container mounts onto, and /etc basics.
fn busybox(rootfs: &Path) -> Result<(), BuildError> {
    let create = |dir: &str, mode: u32| -> Result<(), BuildError> {
        let path = rootfs.join(dir);
        std::fs::create_dir_all(&path).map_err(BuildError::io("create", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(BuildError::io("set the mode of", &path))
    };
    create("", 0o755)?;
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "var",
        "var/log",
    ] {
        create(dir, 0o755)?;
    }
    create("tmp", 0o1777)?;
    create("root", 0o700)?;
    let busybox = rootfs.join("bin/busybox");
    std::fs::copy(HOST_BUSYBOX, &busybox).map_err(PathIoError::at(
        "copy (install busybox-static)",
        Path::new(HOST_BUSYBOX),
    ))?;
    let listing = Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|source| BuildError::Spawn {
            program: HOST_BUSYBOX.into(),
            source,
        })?;
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        let applet = applet.trim();
        // Applet paths are busybox's own (`bin/sh`, `usr/sbin/chroot`); anything else is skipped.
        let plain = !applet.is_empty()
            && !applet.starts_with('/')
            && applet
                .split('/')
                .all(|part| !part.is_empty() && part != "..");
        if !plain || applet == "bin/busybox" {
            continue;
        }
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(BuildError::io("create", parent))?;
        }
        if std::fs::symlink_metadata(&link).is_err() {
            symlink("/bin/busybox", &link).map_err(BuildError::io("create", &link))?;
        }
    }
    for (file, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", "busybox\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        ("etc/shells", "/bin/sh\n/bin/ash\n"),
    ] {
        let path = rootfs.join(file);
        std::fs::write(&path, text).map_err(BuildError::io("write", &path))?;
    }
    let shadow = rootfs.join("etc/shadow");
    std::fs::write(&shadow, "root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n")
        .and_then(|()| std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)))
        .map_err(BuildError::io("write", &shadow))
}

/// The Debian archive the host's apt uses: the first source carrying `suite`, else the first
/// whose URI ends in `/debian`, else Debian's default.
pub fn host_debian_mirror(suite: &str, apt_dir: &Path) -> String {
    let mut entries = Vec::new();
    if let Ok(text) = std::fs::read_to_string(apt_dir.join("sources.list")) {
        entries.extend(one_line_sources(&text));
    }
    if let Ok(dir) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut paths: Vec<_> = dir.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        for path in paths {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some("list") => entries.extend(one_line_sources(&text)),
                Some("sources") => entries.extend(deb822_sources(&text)),
                _ => {}
            }
        }
    }
    let carries = |(_, suites): &&(String, Vec<String>)| suites.iter().any(|s| s == suite);
    let debian = |(uri, _): &&(String, Vec<String>)| uri.trim_end_matches('/').ends_with("/debian");
    entries
        .iter()
        .find(carries)
        .or_else(|| entries.iter().find(debian))
        .map(|(uri, _)| uri.clone())
        .unwrap_or_else(|| DEFAULT_DEBIAN_MIRROR.to_string())
}

/// `deb [options] URI SUITE COMPONENTS...` lines.
fn one_line_sources(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), vec![words.next()?.to_string()]))
        })
        .collect()
}

/// deb822 stanzas (`Types: deb`, `URIs:`, `Suites:`), the first URI of each.
fn deb822_sources(text: &str) -> Vec<(String, Vec<String>)> {
    text.split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
            };
            if !field("Types")?.split_whitespace().any(|t| t == "deb") {
                return None;
            }
            if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
                return None;
            }
            let uri = field("URIs")?.split_whitespace().next()?.to_string();
            let suites = field("Suites")?
                .split_whitespace()
                .map(String::from)
                .collect();
            Some((uri, suites))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_the_hosts_apt_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\n# comment\nURIs: http://security.example/debian-security\n\
             Suites: bookworm-security\nComponents: main\n\n\
             Types: deb deb-src\nURIs: http://mirror.example/debian\n\
             Suites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "# deb http://old.example/debian bookworm main\n\
             deb [arch=amd64] https://packages.example/apt cloud-sdk main\n",
        )
        .unwrap();
        assert_eq!(
            host_debian_mirror("bookworm", dir.path()),
            "http://mirror.example/debian"
        );
        // A suite no source carries: the first Debian archive.
        assert_eq!(
            host_debian_mirror("trixie", dir.path()),
            "http://mirror.example/debian"
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            host_debian_mirror("bookworm", empty.path()),
            DEFAULT_DEBIAN_MIRROR
        );
    }
}
