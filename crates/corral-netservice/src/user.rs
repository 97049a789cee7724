//! The unprivileged user dnsmasq switches to after binding its ports, and whether it can reach
//! the files it re-reads later.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Group, User};

use crate::error::Error;

/// The users dnsmasq may run as, best first: Debian's `dnsmasq` (made by dnsmasq-base), then
/// `nobody`.
const CANDIDATES: [&str; 2] = ["dnsmasq", "nobody"];

/// Who dnsmasq runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceUser {
    pub(crate) name: String,
    pub(crate) group: String,
    uid: u32,
    gid: u32,
}

impl ServiceUser {
    /// The first of [`CANDIDATES`] the host has; `nobody` (uid and gid 65534) when it has none.
    pub(crate) fn find() -> ServiceUser {
        CANDIDATES
            .iter()
            .find_map(|name| User::from_name(name).ok().flatten())
            .map(|user| ServiceUser {
                group: Group::from_gid(user.gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| user.gid.to_string(), |g| g.name),
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
            .unwrap_or_else(|| ServiceUser {
                name: "nobody".into(),
                group: "nogroup".into(),
                uid: 65534,
                gid: 65534,
            })
    }

    /// Fails unless the user may search `dir` and every directory above it.
    pub(crate) fn check_reachable(&self, dir: &Path) -> Result<(), Error> {
        let dir = std::fs::canonicalize(dir).map_err(Error::io("resolve", dir))?;
        for ancestor in dir.ancestors() {
            let meta = std::fs::metadata(ancestor).map_err(Error::io("inspect", ancestor))?;
            if !self.may_search(meta.uid(), meta.gid(), meta.mode()) {
                return Err(Error::Unreachable {
                    user: self.name.clone(),
                    dir: ancestor.to_path_buf(),
                });
            }
        }
        Ok(())
    }

    fn may_search(&self, owner: u32, group: u32, mode: u32) -> bool {
        let bit = if owner == self.uid {
            0o100
        } else if group == self.gid {
            0o010
        } else {
            0o001
        };
        mode & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_permission_comes_from_the_matching_class_only() {
        let user = ServiceUser {
            name: "dnsmasq".into(),
            group: "nogroup".into(),
            uid: 995,
            gid: 65534,
        };
        assert!(user.may_search(0, 0, 0o755));
        assert!(!user.may_search(0, 0, 0o750));
        assert!(user.may_search(0, 65534, 0o750));
        assert!(user.may_search(995, 0, 0o700));
        // The owner class decides alone, even when others may.
        assert!(!user.may_search(995, 0, 0o071));
    }
}
