//! Crash-safe file replacement: readers see the old content or the new, never a mix.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A failed atomic write; the target is unchanged.
pub type AtomicWriteError = corral_error::PathIoError;

/// `rename(2)` that fails with `EEXIST` instead of replacing `to`: publishing a directory or
/// file built under a temporary name, where two racing publishers must not both win.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        from,
        rustix::fs::CWD,
        to,
        rustix::fs::RenameFlags::NOREPLACE,
    )
    .map_err(std::io::Error::from)
}

/// The mode of corral's own files (definitions, state, logs, disks): the owner's alone.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The mode of corral's own directories.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` and any missing parents with [`PRIVATE_DIR_MODE`]; directories that exist
/// keep their mode.
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
}

/// The pid of the process whose [`write_file`] temp file `file_name` is, if it is one: a temp
/// file whose process is gone is litter of an interrupted write, for the caller to sweep.
pub fn temp_file_owner(file_name: &std::ffi::OsStr) -> Option<u32> {
    let name = file_name.to_str()?.strip_prefix('.')?;
    let (_, pid) = name.rsplit_once(TEMP_MARK)?;
    pid.parse().ok()
}

/// What sits between a temp file's target name and the writer's pid.
const TEMP_MARK: &str = ".tmp-";

/// Replaces `path` with `content` and `mode`: a temp file in the same directory, fsync, rename
/// over the target, fsync of the directory. Creates missing parent directories (private ones,
/// [`PRIVATE_DIR_MODE`]).
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), AtomicWriteError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| AtomicWriteError {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    create_private_dir_all(dir).map_err(io("create the directory", dir))?;
    let name = path
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let temp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let result = (|| {
        // A stale temp file (or a symlink someone planted under its name) is removed, and the
        // new one created exclusively: the content never goes through a link.
        match std::fs::remove_file(&temp) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &temp)(err));
            }
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(io("create", &temp))?;
        // The umask may have narrowed the mode at creation.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io("set the mode of", &temp))?;
        file.write_all(content).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("sync", &temp))?;
        fail::fail_point!("atomic.temp-written");
        std::fs::rename(&temp, path).map_err(io("replace", path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync the directory", dir))
    })();
    if result.is_err() {
        // The temp file is ours alone; removing it keeps a failed write from leaving litter.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file");
        write_file(&path, b"one", 0o600).unwrap();
        write_file(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn temp_files_name_their_writer() {
        use std::ffi::OsStr;
        assert_eq!(temp_file_owner(OsStr::new(".state.json.tmp-42")), Some(42));
        assert_eq!(temp_file_owner(OsStr::new("state.json.tmp-42")), None);
        assert_eq!(temp_file_owner(OsStr::new(".state.json")), None);
    }

    #[test]
    fn missing_parents_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a/b/file"), b"x", PRIVATE_FILE_MODE).unwrap();
        for sub in ["a", "a/b"] {
            let mode = std::fs::metadata(dir.path().join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, PRIVATE_DIR_MODE, "{sub}");
        }
    }

    #[test]
    fn failure_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = write_file(&target, b"new", 0o644).unwrap_err();
        assert_eq!(err.action, "replace");
        assert!(target.join("keep").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_planted_under_the_temp_name_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let temp = dir.path().join(format!(".file.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        write_file(&dir.path().join("file"), b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"new");
    }
}
