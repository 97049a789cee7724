//! `corral guest install-agent --root DIR`: puts this corral into a guest's root filesystem as
//! `/usr/local/bin/corral` and has the guest's init start `corral guest agent` at boot (a
//! systemd unit enabled for multi-user.target, or an `/etc/inittab` respawn line).
//!
//! The root is an image, so every path goes through [`FsRoot`]: its symlinks resolve inside it.

use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use corral_host::fsroot::{FsRoot, ResolveError};

/// Where the agent's binary goes in the guest.
pub const AGENT_BINARY: &str = "/usr/local/bin/corral";
const UNIT: &str = "/etc/systemd/system/corral-agent.service";
const UNIT_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/corral-agent.service";
const UNIT_TEXT: &str = "\
[Unit]
Description=corral guest agent

[Service]
ExecStart=/usr/local/bin/corral guest agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
";
const INITTAB: &str = "/etc/inittab";
/// The marker that finds an agent line already in an inittab.
const INITTAB_COMMAND: &str = "/usr/local/bin/corral guest agent";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{root} has neither systemd nor an /etc/inittab; copy {AGENT_BINARY} in and start \
         `corral guest agent` from its init yourself"
    )]
    NoInit { root: PathBuf },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// How the guest starts the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    Systemd,
    /// busybox's (`::respawn:`) or sysvinit's (`id:runlevels:respawn:`) inittab.
    Inittab {
        busybox: bool,
    },
}

impl Init {
    /// How the guest starts the agent, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Init::Systemd => "systemd starts it (corral-agent.service)",
            Init::Inittab { .. } => "init respawns it (/etc/inittab)",
        }
    }
}

/// Installs `exe` into the root filesystem at `root`; returns the init it was wired into and the
/// guest paths written.
pub fn install(root: &Path, exe: &Path) -> Result<(Init, Vec<String>), InstallError> {
    let fs = FsRoot::new(root);
    let is_file = |guest: &str| -> Result<bool, InstallError> { Ok(host(&fs, guest)?.is_file()) };
    let init = if is_file("/lib/systemd/systemd")? || is_file("/usr/lib/systemd/systemd")? {
        Init::Systemd
    } else if is_file(INITTAB)? {
        Init::Inittab {
            busybox: is_file("/bin/busybox")?,
        }
    } else {
        return Err(InstallError::NoInit {
            root: root.to_path_buf(),
        });
    };
    let mut written = Vec::new();
    copy_binary(&host(&fs, AGENT_BINARY)?, exe)?;
    written.push(AGENT_BINARY.to_string());
    match init {
        Init::Systemd => {
            let unit = host(&fs, UNIT)?;
            make_parent(&unit)?;
            corral_host::atomic::write_file(&unit, UNIT_TEXT.as_bytes(), 0o644)?;
            written.push(UNIT.to_string());
            let wants = host(&fs, UNIT_WANTS)?;
            make_parent(&wants)?;
            match std::fs::remove_file(&wants) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("replace", &wants)(e)),
            }
            std::os::unix::fs::symlink(UNIT, &wants).map_err(io("create", &wants))?;
            written.push(UNIT_WANTS.to_string());
        }
        Init::Inittab { busybox } => {
            let path = host(&fs, INITTAB)?;
            let mut text = std::fs::read_to_string(&path).map_err(io("read", &path))?;
            if !text.lines().any(|line| line.contains(INITTAB_COMMAND)) {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                // busybox reads the first field as the terminal to run on: it must stay empty.
                let id = if busybox { "" } else { "ca" };
                let runlevels = if busybox { "" } else { "2345" };
                text.push_str(&format!("{id}:{runlevels}:respawn:{INITTAB_COMMAND}\n"));
                corral_host::atomic::write_file(&path, text.as_bytes(), 0o644)?;
                written.push(INITTAB.to_string());
            }
        }
    }
    Ok((init, written))
}

/// Whether `exe` is a static executable (an ELF file without a program interpreter), which runs
/// in any Linux guest of its architecture; anything else needs the guest to have its libraries.
pub fn is_static(exe: &Path) -> Result<bool, InstallError> {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    /// The size of an ELF64 program header.
    const PHDR_SIZE: usize = 56;
    let mut file = std::fs::File::open(exe).map_err(io("read", exe))?;
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    // ELF, 64-bit, little-endian: what corral builds.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Ok(false);
    }
    let word = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]) as usize;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&header[0x20..0x28]);
    let (phoff, entry_size, count) = (u64::from_le_bytes(offset), word(0x36), word(0x38));
    if entry_size < PHDR_SIZE {
        return Ok(false);
    }
    let mut table = vec![0u8; entry_size * count];
    let loaded = file
        .seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table));
    match loaded {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(io("read", exe)(e)),
    }
    Ok(table
        .chunks_exact(entry_size)
        .all(|entry| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) != PT_INTERP))
}

/// The host path of `guest`, its symlinks resolved inside the root.
fn host(fs: &FsRoot, guest: &str) -> Result<PathBuf, InstallError> {
    Ok(fs.join(&fs.resolve(guest)?))
}

fn make_parent(path: &Path) -> Result<(), InstallError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io("create", parent))
}

/// Copies `exe` to `target` through a temp file beside it, so the guest never sees half a
/// binary.
fn copy_binary(target: &Path, exe: &Path) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    make_parent(target)?;
    let temp = target.with_file_name(format!(".corral.install-{}", std::process::id()));
    std::fs::copy(exe, &temp).map_err(io("copy the agent to", &temp))?;
    let done = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))
        .and_then(|()| std::fs::File::open(&temp)?.sync_all())
        .and_then(|()| std::fs::rename(&temp, target));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&temp);
        return Err(io("install", target)(e));
    }
    Ok(())
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_path_buf();
    move |source| InstallError::Io(PathIoError::new(action, path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        dir
    }

    fn exe(dir: &Path) -> PathBuf {
        let exe = dir.join("exe");
        std::fs::write(&exe, b"\x7fELF agent").unwrap();
        exe
    }

    #[test]
    fn a_systemd_guest_gets_the_binary_and_an_enabled_unit() {
        let root = root_with(&["/usr/lib/systemd/systemd"]);
        let scratch = tempfile::tempdir().unwrap();
        let (init, written) = install(root.path(), &exe(scratch.path())).unwrap();
        assert_eq!(init, Init::Systemd);
        assert_eq!(written, [AGENT_BINARY, UNIT, UNIT_WANTS]);
        let binary = root.path().join("usr/local/bin/corral");
        assert_eq!(std::fs::read(&binary).unwrap(), b"\x7fELF agent");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let unit = std::fs::read_to_string(root.path().join(&UNIT[1..])).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/corral guest agent"));
        assert_eq!(
            std::fs::read_link(root.path().join(&UNIT_WANTS[1..])).unwrap(),
            Path::new(UNIT)
        );
        // Again: the same result, no error over the existing link.
        install(root.path(), &exe(scratch.path())).unwrap();
    }

    #[test]
    fn an_inittab_gets_one_respawn_line_in_its_own_dialect() {
        let root = root_with(&["/bin/busybox"]);
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/inittab"), "::sysinit:/etc/rc").unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let (init, _) = install(root.path(), &exe(scratch.path())).unwrap();
        assert_eq!(init, Init::Inittab { busybox: true });
        let (_, written) = install(root.path(), &exe(scratch.path())).unwrap();
        assert_eq!(written, [AGENT_BINARY], "the line is added once");
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/inittab")).unwrap(),
            "::sysinit:/etc/rc\n::respawn:/usr/local/bin/corral guest agent\n"
        );

        let sysv = root_with(&["/etc/inittab"]);
        install(sysv.path(), &exe(scratch.path())).unwrap();
        assert_eq!(
            std::fs::read_to_string(sysv.path().join("etc/inittab")).unwrap(),
            "ca:2345:respawn:/usr/local/bin/corral guest agent\n"
        );
    }

    /// A 64-bit little-endian ELF header and one program header of type `p_type`.
    fn elf(dir: &Path, p_type: u32) -> PathBuf {
        let mut bytes = vec![0u8; 64 + 56];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        bytes[64..68].copy_from_slice(&p_type.to_le_bytes());
        let path = dir.join(format!("elf-{p_type}"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn only_an_executable_without_an_interpreter_is_static() {
        let scratch = tempfile::tempdir().unwrap();
        assert!(is_static(&elf(scratch.path(), 1)).unwrap(), "PT_LOAD only");
        assert!(!is_static(&elf(scratch.path(), 3)).unwrap(), "PT_INTERP");
        assert!(!is_static(&exe(scratch.path())).unwrap(), "not an ELF file");
        // The test binary is linked as the workspace builds corral: dynamically.
        assert!(!is_static(&std::env::current_exe().unwrap()).unwrap());
    }

    #[test]
    fn a_root_without_an_init_is_refused_and_left_alone() {
        let root = root_with(&["/bin/sh"]);
        let scratch = tempfile::tempdir().unwrap();
        let err = install(root.path(), &exe(scratch.path())).unwrap_err();
        assert!(matches!(err, InstallError::NoInit { .. }), "{err}");
        assert!(!root.path().join("usr").exists());
    }

    #[test]
    fn an_absolute_symlink_in_the_image_stays_inside_it() {
        let root = root_with(&["/usr/lib/systemd/systemd"]);
        // /usr/local -> /corral-escape: on the host that would be outside the root.
        std::os::unix::fs::symlink("/corral-escape", root.path().join("usr/local")).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        install(root.path(), &exe(scratch.path())).unwrap();
        assert!(root.path().join("corral-escape/bin/corral").is_file());
        assert!(!Path::new("/corral-escape").exists());
    }
}
