//! The `uid[:gid]` a process runs as, written the way `runc exec --user` and an instance's
//! `container.user` take it. A missing gid is 0, as runc and Docker make it for a user given by
//! number alone.

use std::fmt;
use std::str::FromStr;

/// Numeric user and group ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not uid[:gid] (numbers, e.g. 1000 or 1000:1000)")]
pub struct InvalidUser(String);

impl FromStr for UserIds {
    type Err = InvalidUser;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidUser(text.to_owned());
        let (uid, gid) = text.split_once(':').unwrap_or((text, "0"));
        Ok(UserIds {
            uid: uid.parse().map_err(|_| invalid())?,
            gid: gid.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for UserIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_alone_runs_in_group_zero_as_runc_does() {
        assert_eq!("1000".parse(), Ok(UserIds { uid: 1000, gid: 0 }));
        assert_eq!(
            "1000:100".parse(),
            Ok(UserIds {
                uid: 1000,
                gid: 100
            })
        );
    }

    #[test]
    fn names_signs_and_empty_parts_are_refused() {
        for bad in ["", "root", "-1", "1000:", ":1000", "1:2:3", "4294967296"] {
            let err = bad.parse::<UserIds>().unwrap_err();
            assert!(err.to_string().contains("uid[:gid]"), "{bad}: {err}");
        }
    }
}
