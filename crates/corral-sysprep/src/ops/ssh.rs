//! SSH identity: the host keys every clone would otherwise share (and so its fingerprint), and,
//! opt-in, the users' `~/.ssh` (authorized keys, known hosts, private keys).

use std::path::Path;

use super::{has_prefix, Planner};
use crate::error::Result;
use crate::keygen::{self, KEY_TYPES};
use crate::plan::Edit;
use crate::view::Kind;
use crate::{HostKeyMode, Operation};

const SSH_DIR: &str = "/etc/ssh";

/// Every `/etc/ssh/ssh_host_*` removed; with [`HostKeyMode::New`] the key types the template
/// had (all of [`KEY_TYPES`] when it had none) are written anew: over the old files, which keep
/// their owner and mode (Fedora's keys are group `ssh_keys`, 0640), or as new files of mode
/// 0600 (0644 for the public half) owned like `/etc/ssh`.
pub(super) fn host_keys(p: &mut Planner) -> Result<()> {
    let op = Operation::SshHostkeys;
    let Some(dir) = p.view.lookup(Path::new(SSH_DIR), true)? else {
        return Ok(());
    };
    if dir.kind != Kind::Dir {
        return Ok(());
    }
    let names: Vec<_> = p
        .names(&dir.path)?
        .into_iter()
        .filter(|name| has_prefix(name, "ssh_host_"))
        .collect();
    let mut new_keys = Vec::new();
    if p.options.host_keys == HostKeyMode::New {
        let had: Vec<&str> = KEY_TYPES
            .into_iter()
            .filter(|t| {
                names
                    .iter()
                    .any(|n| has_prefix(n, &format!("ssh_host_{t}_key")))
            })
            .collect();
        let types = if had.is_empty() {
            KEY_TYPES.to_vec()
        } else {
            had
        };
        let host = p.options.hostname.as_deref().unwrap_or("localhost");
        for key in keygen::generate(&types, &format!("root@{host}"))? {
            new_keys.push((key.name.clone(), key.private, 0o600));
            new_keys.push((format!("{}.pub", key.name), key.public, 0o644));
        }
    }
    for name in &names {
        let path = dir.path.join(name);
        let replaced = new_keys
            .iter()
            .any(|(new, _, _)| name.as_encoded_bytes() == new.as_bytes());
        let node = p.view.lookup(&path, false)?;
        if !(replaced && node.as_ref().is_some_and(|n| n.kind == Kind::File)) {
            p.remove(op, &path)?;
        }
    }
    for (name, content, mode) in new_keys {
        let path = dir.path.join(&name);
        match p.view.lookup(&path, false)? {
            Some(node) if node.kind == Kind::File => {
                p.plan.edit(op, node.path, Edit::Write { content });
            }
            Some(_) => p.plan.skip(
                op,
                &path,
                "it was not a regular file; removed, and sshd makes this key at first boot",
            ),
            None => p.plan.edit(
                op,
                path,
                Edit::Create {
                    content,
                    mode,
                    uid: dir.uid,
                    gid: dir.gid,
                },
            ),
        }
    }
    Ok(())
}

/// `~/.ssh` of root and of every user in `/home`, removed whole.
pub(super) fn user_dirs(p: &mut Planner) -> Result<()> {
    for home in p.homes()? {
        p.remove(Operation::SshUserdir, &home.join(".ssh"))?;
    }
    Ok(())
}
