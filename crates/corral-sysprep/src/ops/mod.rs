//! The operations, each planning its edits against a [`GuestView`]; the shared moves (remove a
//! path, empty a directory, truncate or rewrite a file) live here so that every operation
//! treats links and missing paths the same way:
//! - a file an operation writes or truncates is reached through links (inside the root), so a
//!   link stays a link and its target changes;
//! - a path an operation removes is never followed: the link itself goes;
//! - a directory whose contents an operation removes (`/tmp`, `/var/log/journal`) must be a
//!   real directory: a link there (`/var/log -> /`) is reported and left alone.

mod identity;
mod network;
mod ssh;
mod traces;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::plan::{Edit, Plan};
use crate::view::{GuestView, Kind, Node};
use crate::{Operation, Options};

/// The most corral reads of a configuration file it rewrites.
const CONFIG_LIMIT: u64 = 1 << 20;

/// Plans every operation of `options`, in [`Operation`] order.
pub(crate) fn plan(view: &dyn GuestView, options: &Options) -> Result<Plan> {
    let mut planner = Planner {
        view,
        options,
        plan: Plan::default(),
    };
    for &op in &options.operations {
        match op {
            Operation::MachineId => identity::machine_id(&mut planner)?,
            Operation::SshHostkeys => ssh::host_keys(&mut planner)?,
            Operation::Hostname => identity::hostname(&mut planner)?,
            Operation::DhcpClientState => network::dhcp_client_state(&mut planner)?,
            Operation::UdevPersistentNet => network::udev_persistent_net(&mut planner)?,
            Operation::NetHwaddr => network::net_hwaddr(&mut planner)?,
            Operation::Logfiles => traces::logfiles(&mut planner)?,
            Operation::BashHistory => traces::bash_history(&mut planner)?,
            Operation::TmpFiles => traces::tmp_files(&mut planner)?,
            Operation::RandomSeed => identity::random_seed(&mut planner)?,
            Operation::CloudInit => traces::cloud_init(&mut planner)?,
            Operation::SshUserdir => ssh::user_dirs(&mut planner)?,
            Operation::FsUuids => identity::fs_uuids(&mut planner)?,
        }
    }
    Ok(planner.plan)
}

/// The view being planned against and the plan so far.
pub(crate) struct Planner<'a> {
    view: &'a dyn GuestView,
    options: &'a Options,
    plan: Plan,
}

impl Planner<'_> {
    /// Removes whatever is at `path` (a directory with its contents; a link, not its target).
    fn remove(&mut self, op: Operation, path: &Path) -> Result<()> {
        if let Some(node) = self.view.lookup(path, false)? {
            let edit = if node.kind == Kind::Dir {
                Edit::RemoveTree
            } else {
                Edit::Remove
            };
            self.plan.edit(op, node.path, edit);
        }
        Ok(())
    }

    /// The real directory at `dir`, or `None` (with a skip line when something else is there).
    fn real_dir(&mut self, op: Operation, dir: &Path) -> Result<Option<Node>> {
        match self.view.lookup(dir, false)? {
            None => Ok(None),
            Some(node) if node.kind == Kind::Dir => Ok(Some(node)),
            Some(node) if node.kind == Kind::Symlink => {
                self.plan.skip(
                    op,
                    &node.path,
                    "it is a symbolic link, which corral does not follow when emptying a directory",
                );
                Ok(None)
            }
            Some(node) => {
                self.plan.skip(op, &node.path, "it is not a directory");
                Ok(None)
            }
        }
    }

    /// The sorted names in the resolved directory `dir`.
    fn names(&self, dir: &Path) -> Result<Vec<std::ffi::OsString>> {
        let mut names = self.view.list(dir)?;
        names.sort();
        Ok(names)
    }

    /// Removes the entries of the real directory `dir` whose names `keep` accepts.
    fn remove_entries(
        &mut self,
        op: Operation,
        dir: &Path,
        keep: impl Fn(&OsStr) -> bool,
    ) -> Result<()> {
        let Some(dir) = self.real_dir(op, dir)? else {
            return Ok(());
        };
        for name in self.names(&dir.path)? {
            if keep(&name) {
                self.remove(op, &dir.path.join(&name))?;
            }
        }
        Ok(())
    }

    /// The regular file `path` resolves to, or `None` (with a skip line when something other
    /// than a file is there).
    fn file(&mut self, op: Operation, path: &Path) -> Result<Option<Node>> {
        match self.view.lookup(path, true)? {
            None => Ok(None),
            Some(node) if node.kind == Kind::File => Ok(Some(node)),
            Some(node) => {
                self.plan.skip(op, &node.path, "it is not a regular file");
                Ok(None)
            }
        }
    }

    /// Empties the file `path` resolves to, if it has content.
    fn truncate(&mut self, op: Operation, path: &Path) -> Result<()> {
        if let Some(node) = self.file(op, path)? {
            if node.size > 0 {
                self.plan.edit(op, node.path, Edit::Truncate);
            }
        }
        Ok(())
    }

    /// Rewrites the file `path` resolves to with `change` of its text, when that changes it.
    /// Files that are not UTF-8 text are left alone with a skip line.
    fn rewrite(
        &mut self,
        op: Operation,
        path: &Path,
        change: impl FnOnce(&str) -> String,
    ) -> Result<()> {
        let Some(node) = self.file(op, path)? else {
            return Ok(());
        };
        let bytes = self.view.read(&node.path, CONFIG_LIMIT)?;
        let Ok(text) = String::from_utf8(bytes) else {
            self.plan.skip(op, &node.path, "it is not UTF-8 text");
            return Ok(());
        };
        let changed = change(&text);
        if changed != text {
            self.plan.edit(
                op,
                node.path,
                Edit::Write {
                    content: changed.into_bytes(),
                },
            );
        }
        Ok(())
    }

    /// Gives the file `path` resolves to `content`, or creates it with `mode` (owned like its
    /// directory) when nothing is there and its directory exists.
    fn write_or_create(
        &mut self,
        op: Operation,
        path: &Path,
        content: Vec<u8>,
        mode: u32,
    ) -> Result<()> {
        if self.view.lookup(path, true)?.is_some() {
            if let Some(node) = self.file(op, path)? {
                self.plan.edit(op, node.path, Edit::Write { content });
            }
            return Ok(());
        }
        if let Some(node) = self.view.lookup(path, false)? {
            // Only a dangling link is left: writing would create its target somewhere else.
            self.plan
                .skip(op, &node.path, "it is a link to a file that does not exist");
            return Ok(());
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        match self.view.lookup(parent, true)? {
            Some(dir) if dir.kind == Kind::Dir => {
                let create = Edit::Create {
                    content,
                    mode,
                    uid: dir.uid,
                    gid: dir.gid,
                };
                self.plan.edit(op, dir.path.join(name), create);
            }
            _ => self.plan.skip(op, path, "its directory does not exist"),
        }
        Ok(())
    }

    /// `/root` and the directories in `/home`: the places of users' dotfiles.
    fn homes(&self) -> Result<Vec<PathBuf>> {
        let mut homes = Vec::new();
        let dir = |node: Option<Node>| node.filter(|n| n.kind == Kind::Dir).map(|n| n.path);
        homes.extend(dir(self.view.lookup(Path::new("/root"), true)?));
        if let Some(home) = dir(self.view.lookup(Path::new("/home"), true)?) {
            for name in self.names(&home)? {
                homes.extend(dir(self.view.lookup(&home.join(name), true)?));
            }
        }
        Ok(homes)
    }

    /// Fresh random bytes from the kernel.
    fn random(&self, op: Operation, len: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        getrandom::fill(&mut bytes).map_err(|source| crate::SysprepError::Random {
            operation: op,
            source,
        })?;
        Ok(bytes)
    }
}

/// True when `name` ends with `suffix`.
fn has_suffix(name: &OsStr, suffix: &str) -> bool {
    name.as_encoded_bytes().ends_with(suffix.as_bytes())
}

/// True when `name` starts with `prefix`.
fn has_prefix(name: &OsStr, prefix: &str) -> bool {
    name.as_encoded_bytes().starts_with(prefix.as_bytes())
}
