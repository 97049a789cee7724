//! The `corral` system account: the unprivileged user and group that jailed VMMs run as.
//!
//! One system account for every VM, created on first use like a package's postinst would
//! (`useradd --system`), rather than a uid range per instance: each VMM already sits in its own
//! mount, network and IPC namespaces with nothing of another instance visible, is not dumpable
//! (so processes of the same uid cannot ptrace it or read its memory) and its seccomp filters
//! only let it signal its own threads. What a per-instance uid would add (two compromised VMMs
//! sharing a uid) costs a uid allocator and ownership bookkeeping per instance; see
//! docs/vmm.md.

use std::process::Command;

/// The account jailed VMMs run as.
pub const JAIL_USER: &str = "corral";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot look up user {name}")]
    Lookup {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the system user {name} with useradd; create it by hand (`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {name}`)")]
    Create {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A user's numeric ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// The ids of `name`, if such a user exists.
pub fn lookup(name: &str) -> Result<Option<Ids>, AccountError> {
    let user = nix::unistd::User::from_name(name).map_err(|errno| AccountError::Lookup {
        name: name.to_owned(),
        source: errno.into(),
    })?;
    Ok(user.map(|user| Ids {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }))
}

/// The ids of system user `name`, created (with a group of the same name, no home and no login
/// shell) when it does not exist yet. Two callers racing to create it both get it.
pub fn ensure_system_user(name: &str) -> Result<Ids, AccountError> {
    if let Some(ids) = lookup(name)? {
        return Ok(ids);
    }
    let created = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "corral jailed VMMs",
            name,
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output();
    let create_error = |source| AccountError::Create {
        name: name.to_owned(),
        source,
    };
    let output = created.map_err(create_error)?;
    // Another process may have created it meanwhile (useradd then fails): look again.
    match lookup(name)? {
        Some(ids) => Ok(ids),
        None => Err(create_error(std::io::Error::other(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))),
    }
}
