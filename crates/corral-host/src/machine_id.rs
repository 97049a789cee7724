//! The D-Bus / systemd machine ID: show it, ensure one exists, regenerate it for a clone.
//!
//! `/etc/machine-id` holds 32 lower-case hex digits and a newline (machine-id(5));
//! `/var/lib/dbus/machine-id` must hold the same id and is often a symlink to it (or the other way
//! round). corral writes through symlinks, so a symlink stays a symlink, and writes atomically
//! (temp file, fsync, rename, fsync of the directory), so a crash leaves the old id or the new one.
//! Everything happens inside an [`FsRoot`], so an offline guest tree can be edited safely.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use corral_error::PathIoError;
use serde::Serialize;

use crate::atomic::write_file;
use crate::fsroot::{FsRoot, ResolveError};

/// systemd's canonical location.
pub const ETC_MACHINE_ID: &str = "/etc/machine-id";
/// D-Bus's location, kept consistent with the systemd one.
pub const DBUS_MACHINE_ID: &str = "/var/lib/dbus/machine-id";

/// Errors from machine-id operations.
#[derive(Debug, thiserror::Error)]
pub enum MachineIdError {
    #[error("root directory {root} does not exist")]
    NoRoot { root: PathBuf },
    #[error("{root} does not look like a root filesystem (it has no etc directory)")]
    NotARoot { root: PathBuf },
    #[error("no machine-id at {path}; create one with `corral guest machine-id --ensure`")]
    Missing { path: PathBuf },
    #[error(
        "{path} holds an invalid machine-id ({value:?}); a machine-id is 32 lower-case hex \
         digits; replace it with `corral guest machine-id --regenerate`"
    )]
    Invalid { path: PathBuf, value: String },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("cannot get random bytes from the kernel")]
    Random(#[source] getrandom::Error),
}

/// A valid machine ID: 128 bits, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MachineId([u8; 16]);

impl MachineId {
    /// A new random id, formatted as a version-4 UUID's bits like systemd does.
    pub fn generate() -> Result<Self, MachineIdError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(MachineIdError::Random)?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Self(bytes))
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Why a string is not a machine-id.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a machine-id: expected 32 lower-case hex digits, not all zero")]
pub struct ParseMachineIdError;

impl FromStr for MachineId {
    type Err = ParseMachineIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != 32
            || !digits
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return Err(ParseMachineIdError);
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| ParseMachineIdError)?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| ParseMachineIdError)?;
        }
        if bytes == [0; 16] {
            return Err(ParseMachineIdError);
        }
        Ok(Self(bytes))
    }
}

/// What a machine-id file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdFile {
    /// No file (or a dangling symlink).
    Missing,
    /// Empty or `uninitialized`: systemd generates an id at boot (the template convention).
    Unset,
    /// Something that is not a machine-id.
    Invalid(String),
    Valid(MachineId),
}

impl IdFile {
    fn parse(content: &str) -> Self {
        let value = content.strip_suffix('\n').unwrap_or(content);
        if value.trim().is_empty() || value.trim() == "uninitialized" {
            return Self::Unset;
        }
        match value.parse() {
            Ok(id) => Self::Valid(id),
            Err(_) => Self::Invalid(value.to_string()),
        }
    }

    fn valid(&self) -> Option<MachineId> {
        match self {
            Self::Valid(id) => Some(*id),
            _ => None,
        }
    }
}

/// A change made to a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    /// The file did not exist (or was empty) and now holds the id.
    Created { path: String },
    /// The file held another value, which is gone now.
    Replaced { path: String, previous: String },
    /// A symlink to the canonical file was created.
    Linked { path: String, target: String },
}

/// The result of `--ensure` or `--regenerate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    #[serde(serialize_with = "serialize_display")]
    pub id: MachineId,
    pub changes: Vec<Change>,
}

fn serialize_display<S: serde::Serializer>(id: &MachineId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// The machine-id files of one root, with symlinks resolved inside it.
struct IdFiles<'a> {
    root: &'a FsRoot,
    /// Where `/etc/machine-id` really is (guest path).
    etc: String,
    /// Where `/var/lib/dbus/machine-id` really is, when it is not the same file as `etc`.
    dbus: Option<String>,
    /// `/var/lib/dbus` exists (so D-Bus is installed and wants its id).
    dbus_dir: bool,
}

impl<'a> IdFiles<'a> {
    fn open(root: &'a FsRoot) -> Result<Self, MachineIdError> {
        if !root.dir().is_dir() {
            return Err(MachineIdError::NoRoot {
                root: root.dir().to_path_buf(),
            });
        }
        if !root.join("/etc").is_dir() {
            return Err(MachineIdError::NotARoot {
                root: root.dir().to_path_buf(),
            });
        }
        let etc = root.resolve(ETC_MACHINE_ID)?;
        let dbus = root.resolve(DBUS_MACHINE_ID)?;
        Ok(Self {
            root,
            dbus: (dbus != etc).then_some(dbus),
            etc,
            dbus_dir: root.join("/var/lib/dbus").is_dir(),
        })
    }

    fn read(&self, guest_path: &str) -> Result<IdFile, MachineIdError> {
        let path = self.root.join(guest_path);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(IdFile::parse(&String::from_utf8_lossy(&bytes))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(IdFile::Missing),
            Err(source) => Err(MachineIdError::Io(PathIoError::new("read", path, source))),
        }
    }

    /// Writes `id` to every file that does not already hold it, recording what changed.
    fn store(&self, id: MachineId) -> Result<Vec<Change>, MachineIdError> {
        let mut changes = Vec::new();
        let etc_state = self.read(&self.etc)?;
        if etc_state.valid() != Some(id) {
            write_machine_id(&self.root.join(&self.etc), id)?;
            changes.push(change_for(ETC_MACHINE_ID, etc_state));
        }
        if let Some(dbus) = &self.dbus {
            let state = self.read(dbus)?;
            let is_link = self.root.join(DBUS_MACHINE_ID).is_symlink();
            match state {
                IdFile::Valid(current) if current == id => {}
                IdFile::Missing if !is_link => {
                    if self.dbus_dir {
                        self.link_dbus(&mut changes)?;
                    }
                }
                state => {
                    write_machine_id(&self.root.join(dbus), id)?;
                    changes.push(change_for(DBUS_MACHINE_ID, state));
                }
            }
        }
        Ok(changes)
    }

    fn link_dbus(&self, changes: &mut Vec<Change>) -> Result<(), MachineIdError> {
        let link = self.root.join(DBUS_MACHINE_ID);
        std::os::unix::fs::symlink(ETC_MACHINE_ID, &link).map_err(|source| {
            MachineIdError::Io(PathIoError::new("create the symlink", link, source))
        })?;
        changes.push(Change::Linked {
            path: DBUS_MACHINE_ID.to_string(),
            target: ETC_MACHINE_ID.to_string(),
        });
        Ok(())
    }
}

/// Mode 0444, as systemd creates the file.
fn write_machine_id(path: &std::path::Path, id: MachineId) -> Result<(), MachineIdError> {
    Ok(write_file(path, format!("{id}\n").as_bytes(), 0o444)?)
}

fn change_for(path: &str, previous: IdFile) -> Change {
    let path = path.to_string();
    match previous {
        IdFile::Missing | IdFile::Unset => Change::Created { path },
        IdFile::Invalid(previous) => Change::Replaced { path, previous },
        IdFile::Valid(previous) => Change::Replaced {
            path,
            previous: previous.to_string(),
        },
    }
}

/// The machine's id: `/etc/machine-id`, or D-Bus's copy when systemd's is missing.
pub fn show(root: &FsRoot) -> Result<MachineId, MachineIdError> {
    let files = IdFiles::open(root)?;
    let candidates = std::iter::once(&files.etc).chain(files.dbus.as_ref());
    for guest_path in candidates {
        match files.read(guest_path)? {
            IdFile::Valid(id) => return Ok(id),
            IdFile::Invalid(value) => {
                return Err(MachineIdError::Invalid {
                    path: root.join(guest_path),
                    value,
                })
            }
            IdFile::Missing | IdFile::Unset => {}
        }
    }
    Err(MachineIdError::Missing {
        path: root.join(ETC_MACHINE_ID),
    })
}

/// Like `dbus-uuidgen --ensure`: keeps a valid id (copying it to whichever file lacks it) and
/// creates one when there is none or what is there is invalid (reported in the changes).
pub fn ensure(root: &FsRoot) -> Result<Outcome, MachineIdError> {
    let files = IdFiles::open(root)?;
    let existing = match files.read(&files.etc)?.valid() {
        Some(id) => Some(id),
        None => match &files.dbus {
            Some(dbus) => files.read(dbus)?.valid(),
            None => None,
        },
    };
    let id = match existing {
        Some(id) => id,
        None => MachineId::generate()?,
    };
    Ok(Outcome {
        id,
        changes: files.store(id)?,
    })
}

/// A fresh random id in both files (what a clone or template instance needs).
pub fn regenerate(root: &FsRoot) -> Result<Outcome, MachineIdError> {
    let files = IdFiles::open(root)?;
    let id = MachineId::generate()?;
    Ok(Outcome {
        id,
        changes: files.store(id)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    const ID_A: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";
    const ID_B: &str = "0123456789abcdef0123456789abcdef";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/dbus")).unwrap();
        dir
    }

    fn read(dir: &tempfile::TempDir, path: &str) -> String {
        std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
    }

    #[test]
    fn parses_only_canonical_ids() {
        assert_eq!(ID_A.parse::<MachineId>().unwrap().to_string(), ID_A);
        for bad in [
            "",
            "3D1219C7C4C5404AAA1F6D2A48ADFDA4",
            "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4",
            "3d1219c7c4c5404aaa1f6d2a48adfda",
            "00000000000000000000000000000000",
            "3d1219c7c4c5404aaa1f6d2a48adfdag",
        ] {
            assert!(bad.parse::<MachineId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_v4_and_differ() {
        let a = MachineId::generate().unwrap();
        let b = MachineId::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.parse::<MachineId>().unwrap(), a);
        assert_eq!(&text[12..13], "4", "version nibble");
    }

    #[test]
    fn show_reports_missing_and_invalid_clearly() {
        let dir = tree();
        let root = FsRoot::new(dir.path());
        assert!(matches!(show(&root), Err(MachineIdError::Missing { .. })));
        std::fs::write(dir.path().join("etc/machine-id"), "not-an-id\n").unwrap();
        let err = show(&root).unwrap_err();
        assert!(err.to_string().contains("\"not-an-id\""), "{err}");
        std::fs::write(dir.path().join("etc/machine-id"), format!("{ID_A}\n")).unwrap();
        assert_eq!(show(&root).unwrap().to_string(), ID_A);
    }

    #[test]
    fn show_falls_back_to_dbus() {
        let dir = tree();
        std::fs::write(
            dir.path().join("var/lib/dbus/machine-id"),
            format!("{ID_B}\n"),
        )
        .unwrap();
        assert_eq!(show(&FsRoot::new(dir.path())).unwrap().to_string(), ID_B);
    }

    #[test]
    fn ensure_keeps_a_valid_id_and_syncs_dbus() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/machine-id"), format!("{ID_A}\n")).unwrap();
        std::fs::write(dir.path().join("var/lib/dbus/machine-id"), "garbage\n").unwrap();
        let outcome = ensure(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(outcome.id.to_string(), ID_A);
        assert_eq!(
            outcome.changes,
            vec![Change::Replaced {
                path: DBUS_MACHINE_ID.into(),
                previous: "garbage".into()
            }]
        );
        assert_eq!(read(&dir, DBUS_MACHINE_ID), format!("{ID_A}\n"));
    }

    #[test]
    fn ensure_copies_dbus_id_to_etc() {
        let dir = tree();
        std::fs::write(
            dir.path().join("var/lib/dbus/machine-id"),
            format!("{ID_B}\n"),
        )
        .unwrap();
        let outcome = ensure(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(outcome.id.to_string(), ID_B);
        assert_eq!(read(&dir, ETC_MACHINE_ID), format!("{ID_B}\n"));
    }

    #[test]
    fn ensure_replaces_an_invalid_id_and_says_so() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/machine-id"), "XYZ\n").unwrap();
        let outcome = ensure(&FsRoot::new(dir.path())).unwrap();
        assert!(outcome.changes.contains(&Change::Replaced {
            path: ETC_MACHINE_ID.into(),
            previous: "XYZ".into()
        }));
        assert_eq!(read(&dir, ETC_MACHINE_ID), format!("{}\n", outcome.id));
        // D-Bus is installed (its directory exists), so it gets a link to the canonical file.
        assert!(dir.path().join("var/lib/dbus/machine-id").is_symlink());
    }

    #[test]
    fn ensure_on_an_empty_template_file_creates_an_id() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/machine-id"), "").unwrap();
        let outcome = ensure(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(
            outcome.changes[0],
            Change::Created {
                path: ETC_MACHINE_ID.into()
            }
        );
    }

    #[test]
    fn regenerate_writes_through_a_symlink_and_keeps_it() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/machine-id"), format!("{ID_A}\n")).unwrap();
        symlink(
            "/etc/machine-id",
            dir.path().join("var/lib/dbus/machine-id"),
        )
        .unwrap();
        let outcome = regenerate(&FsRoot::new(dir.path())).unwrap();
        assert_ne!(outcome.id.to_string(), ID_A);
        assert!(dir.path().join("var/lib/dbus/machine-id").is_symlink());
        assert_eq!(
            std::fs::read_link(dir.path().join("var/lib/dbus/machine-id")).unwrap(),
            Path::new("/etc/machine-id"),
            "the link's target is unchanged"
        );
        assert_eq!(read(&dir, ETC_MACHINE_ID), format!("{}\n", outcome.id));
        assert_eq!(
            outcome.changes.len(),
            1,
            "one real file changed: {:?}",
            outcome.changes
        );
        let mode = std::fs::metadata(dir.path().join("etc/machine-id"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[test]
    fn regenerate_with_etc_linking_to_dbus() {
        let dir = tree();
        std::fs::write(
            dir.path().join("var/lib/dbus/machine-id"),
            format!("{ID_B}\n"),
        )
        .unwrap();
        symlink(
            "../var/lib/dbus/machine-id",
            dir.path().join("etc/machine-id"),
        )
        .unwrap();
        let outcome = regenerate(&FsRoot::new(dir.path())).unwrap();
        assert!(dir.path().join("etc/machine-id").is_symlink());
        assert_eq!(read(&dir, DBUS_MACHINE_ID), format!("{}\n", outcome.id));
    }

    #[test]
    fn regenerate_never_escapes_the_root() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // A hostile image pointing at a host path: resolved inside the root, not on the host.
        symlink(&victim, dir.path().join("etc/machine-id")).unwrap();
        regenerate(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let inside = dir.path().join(victim.strip_prefix("/").unwrap());
        assert!(inside.exists());
    }

    #[test]
    fn separate_regular_dbus_file_is_rewritten() {
        let dir = tree();
        std::fs::write(dir.path().join("etc/machine-id"), format!("{ID_A}\n")).unwrap();
        std::fs::write(
            dir.path().join("var/lib/dbus/machine-id"),
            format!("{ID_A}\n"),
        )
        .unwrap();
        let outcome = regenerate(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(outcome.changes.len(), 2);
        assert!(!dir.path().join("var/lib/dbus/machine-id").is_symlink());
        assert_eq!(read(&dir, DBUS_MACHINE_ID), format!("{}\n", outcome.id));
    }

    #[test]
    fn not_a_root() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            regenerate(&FsRoot::new(dir.path())),
            Err(MachineIdError::NotARoot { .. })
        ));
    }

    #[test]
    fn no_dbus_directory_means_no_dbus_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let outcome = ensure(&FsRoot::new(dir.path())).unwrap();
        assert_eq!(outcome.changes.len(), 1);
        assert!(!dir.path().join("var").exists());
    }
}
