//! The on-disk store under the corral root:
//!
//! ```text
//! instances/NAME/instance.toml   definition (what the user asked for)
//! instances/NAME/state.json      runtime state, written atomically
//! instances/NAME/lock            the instance lock (flock)
//! ```
//!
//! An instance appears whole or not at all: it is built in a hidden `.creating-*` directory and
//! renamed into place without replacing anything; a deleted one is renamed aside before its files
//! are removed. Hidden directories of dead processes are swept away on the next open.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::fs::DirBuilderExt;

use corral_error::PathIoError;
use corral_host::atomic::{
    create_private_dir_all, write_file, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE,
};
use corral_vmm::config::MacAddress;

use crate::definition::{validate_name, Definition, DefinitionError};
use crate::events::journal::EventJournal;
use crate::events::{Action, LifecycleEvent};
use crate::lock::{InstanceLock, LockError};
use crate::nic::stable_mac;
use crate::state::{process_alive, State};

/// The root when neither `--root` nor `CORRAL_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/corral";

pub(crate) const DEFINITION_FILE: &str = "instance.toml";
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const LOCK_FILE: &str = "lock";
const CREATING_PREFIX: &str = ".creating-";
const DELETING_PREFIX: &str = ".deleting-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("instance {0} does not exist; `corral list --all` shows the defined instances")]
    NotFound(String),
    #[error("instance {0} already exists; choose another name or delete it first")]
    Exists(String),
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("state file {path} is corrupt; fix or delete it to reset the instance to stopped")]
    CorruptState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the state file {path}")]
    EncodeState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io(PathIoError::new(action, path, source))
}

/// The corral root.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root` and sweeps away litter of dead commands.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self { root: root.into() };
        let instances = store.instances_dir();
        create_private_dir_all(&instances).map_err(io_error("create", &instances))?;
        store.sweep_litter();
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    /// The directory of instance `name` (which need not exist).
    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.instances_dir().join(name)
    }

    /// Every MAC address the instances use, given or derived.
    pub fn macs_in_use(&self) -> HashSet<MacAddress> {
        let mut used = HashSet::new();
        for name in self.names().unwrap_or_default() {
            if let Ok(definition) = self.definition(&name) {
                used.extend(definition.nics.iter().enumerate().map(|(index, nic)| {
                    nic.mac
                        .unwrap_or_else(|| stable_mac(&definition.uuid, index))
                }));
            }
        }
        used
    }

    /// Names of all instances, sorted.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.instances_dir();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_error("list", &dir))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && self.instance_dir(n).join(DEFINITION_FILE).exists())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Errors unless instance `name` exists.
    pub fn require(&self, name: &str) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        let dir = self.instance_dir(name);
        if dir.join(DEFINITION_FILE).exists() {
            Ok(dir)
        } else {
            Err(StoreError::NotFound(name.to_string()))
        }
    }

    /// Creates instance `definition.name`: `populate` fills (and checks) the new directory, e.g.
    /// unpacks a root filesystem, before it appears under its name. Nothing is left behind on
    /// failure; a process killed on the way leaves a hidden directory the next open sweeps.
    pub fn create<E: From<StoreError>>(
        &self,
        definition: &Definition,
        populate: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        definition.validate().map_err(StoreError::from)?;
        let name = &definition.name;
        let target = self.instance_dir(name);
        if target.exists() {
            return Err(StoreError::Exists(name.clone()).into());
        }
        let staging = self
            .instances_dir()
            .join(format!("{CREATING_PREFIX}{name}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(PRIVATE_DIR_MODE)
            .create(&staging)
            .map_err(io_error("create", &staging))?;
        fail::fail_point!("create.staging-made");
        let built = (|| {
            populate(&staging)?;
            fail::fail_point!("create.populated");
            write_file(
                &staging.join(DEFINITION_FILE),
                definition.to_toml().as_bytes(),
                PRIVATE_FILE_MODE,
            )
            .map_err(StoreError::from)?;
            write_state_file(&staging.join(STATE_FILE), &State::stopped())?;
            fail::fail_point!("create.definition-written");
            corral_host::atomic::rename_noreplace(&staging, &target).map_err(|err| {
                if err.raw_os_error() == Some(libc::EEXIST)
                    || err.raw_os_error() == Some(libc::ENOTEMPTY)
                {
                    StoreError::Exists(name.clone()).into()
                } else {
                    io_error("create", &target)(err).into()
                }
            })
        })();
        if built.is_err() {
            // Ours alone (the name carries our pid); removing it is what "nothing left" means.
            let _ = std::fs::remove_dir_all(&staging);
        } else {
            self.record(&LifecycleEvent::now(name, Action::Created));
        }
        built.map(|()| target)
    }

    /// Removes instance `name` and everything in its directory.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let dir = self.require(name)?;
        let aside = self
            .instances_dir()
            .join(format!("{DELETING_PREFIX}{name}-{}", std::process::id()));
        std::fs::rename(&dir, &aside).map_err(io_error("delete", &dir))?;
        self.record(&LifecycleEvent::now(name, Action::Deleted));
        fail::fail_point!("delete.renamed-aside");
        std::fs::remove_dir_all(&aside).map_err(io_error("remove", &aside))
    }

    /// Reads and validates instance `name`'s definition.
    pub fn definition(&self, name: &str) -> Result<Definition, StoreError> {
        let path = self.require(name)?.join(DEFINITION_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_error("read", &path))?;
        Ok(Definition::from_toml(&text, &path)?)
    }

    /// Replaces instance `name`'s definition (validated first).
    pub fn save_definition(&self, definition: &Definition) -> Result<(), StoreError> {
        definition.validate()?;
        let path = self.require(&definition.name)?.join(DEFINITION_FILE);
        Ok(write_file(
            &path,
            definition.to_toml().as_bytes(),
            PRIVATE_FILE_MODE,
        )?)
    }

    /// Reads instance `name`'s recorded state.
    pub fn state(&self, name: &str) -> Result<State, StoreError> {
        let path = self.require(name)?.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::CorruptState { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::stopped()),
            Err(e) => Err(io_error("read", &path)(e)),
        }
    }

    /// Records instance `name`'s state, and the lifecycle event its change is, if any.
    pub fn save_state(&self, name: &str, state: &State) -> Result<(), StoreError> {
        let path = self.require(name)?.join(STATE_FILE);
        let before = self.state(name).ok();
        write_state_file(&path, state)?;
        if let Some(event) =
            before.and_then(|before| LifecycleEvent::of_change(name, &before, state))
        {
            self.record(&event);
        }
        Ok(())
    }

    /// The root's event journal.
    pub fn events(&self) -> EventJournal {
        EventJournal::in_root(&self.root)
    }

    /// Appends `event` to the journal. A journal that cannot be written is warned about, never
    /// a reason to fail the change it records (which has happened).
    fn record(&self, event: &LifecycleEvent) {
        if let Err(err) = self.events().append(event) {
            tracing::warn!(
                "the {} event of instance {} is not recorded: {}",
                event.action,
                event.instance,
                corral_host::error_chain(&err)
            );
        }
    }

    /// Takes instance `name`'s lock, waiting up to `timeout` for another command to finish.
    pub fn lock(&self, name: &str, timeout: Duration) -> Result<InstanceLock, StoreError> {
        let dir = self.require(name)?;
        let lock = InstanceLock::acquire(&dir.join(LOCK_FILE), name, timeout)?;
        // The holder we waited for may have deleted the instance.
        self.require(name)?;
        Ok(lock)
    }

    /// Removes `.creating-*` / `.deleting-*` directories and the temp files of interrupted
    /// atomic writes in instance directories, whose process is gone.
    fn sweep_litter(&self) {
        let Ok(entries) = std::fs::read_dir(self.instances_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                let dir = entry.path();
                sweep_temp_files(&dir);
                sweep_temp_files(&dir.join("run"));
                continue;
            }
            let Some(rest) = name
                .strip_prefix(CREATING_PREFIX)
                .or_else(|| name.strip_prefix(DELETING_PREFIX))
            else {
                continue;
            };
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !process_alive(pid, None)) {
                // Best effort: a sweep that fails now is retried by the next command.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Removes the temp files of [`write_file`]s and the images still under their temporary name
/// (a linked clone's overlay for its source) in `dir` whose process is gone.
fn sweep_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = corral_host::atomic::temp_file_owner(&name)
            .or_else(|| corral_disk::pending_image_owner(&name));
        if owner.is_some_and(|pid| !process_alive(pid, None)) {
            // Best effort: a sweep that fails now is retried by the next command.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_state_file(path: &Path, state: &State) -> Result<(), StoreError> {
    let mut json = serde_json::to_vec_pretty(state).map_err(|source| StoreError::EncodeState {
        path: path.to_path_buf(),
        source,
    })?;
    json.push(b'\n');
    Ok(write_file(path, &json, PRIVATE_FILE_MODE)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Kind;
    use crate::state::Status;
    use corral_vmm::config::MemorySize;

    fn container(name: &str) -> Definition {
        let mut definition = Definition::new(
            name,
            Kind::Container,
            crate::definition::new_uuid().unwrap(),
        );
        definition.memory = MemorySize(64 << 20);
        definition
    }

    #[test]
    fn create_list_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create(&container("b"), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let a = container("a");
        store.create(&a, |_| Ok::<_, StoreError>(())).unwrap();
        assert_eq!(store.names().unwrap(), vec!["a", "b"]);
        assert_eq!(store.definition("a").unwrap(), a);
        assert_eq!(store.state("a").unwrap().status, Status::Stopped);
        store.remove("a").unwrap();
        assert_eq!(store.names().unwrap(), vec!["b"]);
        assert!(matches!(
            store.definition("a"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create(&container("web"), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let err = store
            .create(&container("web"), |_| Ok::<_, StoreError>(()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance web already exists; choose another name or delete it first"
        );
    }

    #[test]
    fn failed_population_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store
            .create(&container("web"), |staging| {
                std::fs::write(staging.join("partial"), b"x").unwrap();
                Err(StoreError::NotFound("rootfs".into()))
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)));
        assert_eq!(
            std::fs::read_dir(dir.path().join("instances"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn litter_of_dead_commands_is_swept_and_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let litter = dir
            .path()
            .join(format!("instances/.creating-web-{dead_pid}"));
        std::fs::create_dir(&litter).unwrap();
        std::fs::write(litter.join("instance.toml"), "half").unwrap();
        assert!(
            store.names().unwrap().is_empty(),
            "a half instance is never listed"
        );
        Store::open(dir.path()).unwrap();
        assert!(!litter.exists());
    }

    #[test]
    fn state_is_saved_atomically_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create(&container("web"), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let mut state = store.state("web").unwrap();
        state.status = Status::Running;
        state.pid = Some(1);
        store.save_state("web", &state).unwrap();
        assert_eq!(store.state("web").unwrap(), state);
        std::fs::write(dir.path().join("instances/web/state.json"), "{").unwrap();
        let err = store.state("web").unwrap_err();
        assert!(err.to_string().contains("is corrupt"), "{err}");
    }

    #[test]
    fn lock_reports_a_deleted_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create(&container("web"), |_| Ok::<_, StoreError>(()))
            .unwrap();
        let lock = store.lock("web", Duration::ZERO).unwrap();
        store.remove("web").unwrap();
        drop(lock);
        assert!(matches!(
            store.lock("web", Duration::ZERO),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn invalid_names_never_touch_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(
            store.require("../etc"),
            Err(StoreError::Definition(_))
        ));
    }
}
