//! The remotes a user knows: `remotes.toml` in the config directory, replaced atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_core::trust::Fingerprint;

use crate::RemoteError;

/// A remote corral server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// `HOST:PORT` of its `corral serve --listen`.
    pub address: String,
    /// What its certificate's SHA-256 must be.
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemotesFile {
    #[serde(default)]
    remotes: BTreeMap<String, Remote>,
}

/// The remotes file of a config directory.
#[derive(Clone, Debug)]
pub struct Remotes {
    file: PathBuf,
}

impl Remotes {
    pub fn in_dir(dir: &Path) -> Remotes {
        Remotes {
            file: dir.join("remotes.toml"),
        }
    }

    /// Every remote, by name.
    pub fn list(&self) -> Result<BTreeMap<String, Remote>, RemoteError> {
        Ok(self.read()?.remotes)
    }

    /// The remote `name`.
    pub fn get(&self, name: &str) -> Result<Remote, RemoteError> {
        self.read()?
            .remotes
            .remove(name)
            .ok_or_else(|| RemoteError::UnknownRemote(name.to_owned()))
    }

    /// Records `remote` as `name`, refused when the name is taken.
    pub fn add(&self, name: &str, remote: Remote) -> Result<(), RemoteError> {
        corral_core::definition::validate_name(name)
            .map_err(|_| RemoteError::Name(name.to_owned()))?;
        let mut file = self.read()?;
        if file.remotes.contains_key(name) {
            return Err(RemoteError::NameTaken(name.to_owned()));
        }
        file.remotes.insert(name.to_owned(), remote);
        self.write(&file)
    }

    /// Forgets the remote `name`.
    pub fn remove(&self, name: &str) -> Result<Remote, RemoteError> {
        let mut file = self.read()?;
        let removed = (file.remotes.remove(name))
            .ok_or_else(|| RemoteError::UnknownRemote(name.to_owned()))?;
        self.write(&file)?;
        Ok(removed)
    }

    fn read(&self) -> Result<RemotesFile, RemoteError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RemotesFile::default())
            }
            Err(err) => return Err(corral_error::PathIoError::new("read", &self.file, err).into()),
        };
        toml::from_str(&text).map_err(|source| RemoteError::Damaged {
            path: self.file.clone(),
            source: Box::new(source),
        })
    }

    fn write(&self, file: &RemotesFile) -> Result<(), RemoteError> {
        let text = toml::to_string(file).map_err(|err| RemoteError::Encode(err.to_string()))?;
        corral_host::atomic::write_file(&self.file, text.as_bytes(), 0o600)?;
        Ok(())
    }
}
