//! `corral create`'s shortcuts (`--user`, `--ssh-key`, `--password-hash`) as `#cloud-config`
//! user-data, alone or merged into the user's own `#cloud-config`.

use serde_yaml::{Mapping, Value};

use crate::error::SeedError;
use crate::validate::{cloud_config_mapping, is_cloud_config, CLOUD_CONFIG_HEADER};

/// What the shortcut flags ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shortcuts {
    /// A user to create, with sudo rights.
    pub user: Option<String>,
    /// Authorized SSH public keys: the user's, or the image's default user's without `user`.
    pub ssh_keys: Vec<String>,
    /// The user's password as a crypt(3) hash (`openssl passwd -6`, `mkpasswd`).
    pub password_hash: Option<String>,
}

impl Shortcuts {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The user-data: `base` (the user's own document, which must then be `#cloud-config`)
    /// with the shortcuts merged in (users appended to its `users`, keys to its
    /// `ssh_authorized_keys`), or the shortcuts alone.
    pub fn render(&self, base: Option<&[u8]>) -> Result<String, SeedError> {
        self.check()?;
        let mut document = match base {
            None => Mapping::new(),
            Some(bytes) if is_cloud_config(bytes) => cloud_config_mapping("user_data", bytes)?,
            Some(_) => {
                return Err(SeedError::Shortcut(
                    "--user, --ssh-key and --password-hash write #cloud-config user-data, and \
                     the --user-data file is another type (its first line is not \
                     #cloud-config); put the users into that file, or give a #cloud-config \
                     file"
                        .into(),
                ))
            }
        };
        let keys: Vec<Value> = self.ssh_keys.iter().map(|k| k.clone().into()).collect();
        match &self.user {
            Some(name) => {
                let mut user = Mapping::new();
                user.insert("name".into(), name.clone().into());
                user.insert("sudo".into(), "ALL=(ALL) NOPASSWD:ALL".into());
                user.insert("shell".into(), "/bin/bash".into());
                user.insert("lock_passwd".into(), self.password_hash.is_none().into());
                if let Some(hash) = &self.password_hash {
                    user.insert("hashed_passwd".into(), hash.clone().into());
                }
                if !keys.is_empty() {
                    user.insert("ssh_authorized_keys".into(), Value::Sequence(keys));
                }
                append(&mut document, "users", vec![Value::Mapping(user)])?;
            }
            None => append(&mut document, "ssh_authorized_keys", keys)?,
        }
        Ok(format!(
            "{CLOUD_CONFIG_HEADER}\n{}",
            crate::yaml(&Value::Mapping(document))
        ))
    }

    fn check(&self) -> Result<(), SeedError> {
        if let Some(name) = &self.user {
            let mut bytes = name.bytes();
            let valid = bytes
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && bytes
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
                && name.len() <= 32;
            if !valid {
                return Err(SeedError::Shortcut(format!(
                    "--user {name:?} is not a user name: use up to 32 lower-case letters, \
                     digits, '_' or '-', starting with a letter or '_'"
                )));
            }
        }
        if let Some(hash) = &self.password_hash {
            if self.user.is_none() {
                return Err(SeedError::Shortcut(
                    "--password-hash sets the password of the --user it creates; add --user NAME"
                        .into(),
                ));
            }
            if !hash.starts_with('$') || hash.chars().any(char::is_whitespace) {
                return Err(SeedError::Shortcut(
                    "--password-hash takes a crypt(3) hash such as `openssl passwd -6` prints \
                     ($6$...), not a password"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// Appends `items` to the sequence at `key` of `document` (made when absent).
fn append(document: &mut Mapping, key: &str, items: Vec<Value>) -> Result<(), SeedError> {
    match document.get_mut(key) {
        None | Some(Value::Null) => {
            document.insert(key.into(), Value::Sequence(items));
            Ok(())
        }
        Some(Value::Sequence(existing)) => {
            existing.extend(items);
            Ok(())
        }
        Some(_) => Err(SeedError::invalid(
            "user_data",
            format!("`{key}` is not a list, so the shortcuts cannot add to it"),
        )),
    }
}

/// The keys of an `authorized_keys`-style file: its lines less blanks and comments.
pub fn parse_ssh_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq test@host";

    #[test]
    fn a_user_with_a_key_and_a_hash_renders_as_cloud_config() {
        let shortcuts = Shortcuts {
            user: Some("ada".into()),
            ssh_keys: parse_ssh_keys(&format!("# mine\n{KEY}\n\n")),
            password_hash: Some("$6$salt$hash".into()),
        };
        let text = shortcuts.render(None).unwrap();
        assert_eq!(
            text,
            format!(
                "#cloud-config\nusers:\n- name: ada\n  sudo: ALL=(ALL) NOPASSWD:ALL\n  \
                 shell: /bin/bash\n  lock_passwd: false\n  hashed_passwd: $6$salt$hash\n  \
                 ssh_authorized_keys:\n  - {KEY}\n"
            )
        );
        crate::validate::document("user_data", text.as_bytes()).unwrap();
    }

    #[test]
    fn keys_without_a_user_go_to_the_default_user() {
        let shortcuts = Shortcuts {
            ssh_keys: vec![KEY.into()],
            ..Shortcuts::default()
        };
        assert_eq!(
            shortcuts.render(None).unwrap(),
            format!("#cloud-config\nssh_authorized_keys:\n- {KEY}\n")
        );
    }

    #[test]
    fn shortcuts_merge_into_cloud_config_and_refuse_other_types() {
        let shortcuts = Shortcuts {
            user: Some("ada".into()),
            ..Shortcuts::default()
        };
        let merged = shortcuts
            .render(Some(
                b"#cloud-config\nusers:\n- default\nruncmd:\n- [touch, /m]\n",
            ))
            .unwrap();
        let mapping = cloud_config_mapping("user_data", merged.as_bytes()).unwrap();
        let users = mapping["users"].as_sequence().unwrap();
        assert_eq!(users[0], Value::from("default"));
        assert_eq!(users[1]["name"], Value::from("ada"));
        assert_eq!(users[1]["lock_passwd"], Value::from(true));
        assert!(mapping.contains_key("runcmd"));
        let err = shortcuts
            .render(Some(b"#!/bin/sh\necho hi\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("another type") && err.contains("#cloud-config"),
            "{err}"
        );
    }

    #[test]
    fn bad_shortcuts_are_explained() {
        for (shortcuts, wanted) in [
            (
                Shortcuts {
                    user: Some("Ada Lovelace".into()),
                    ..Shortcuts::default()
                },
                "is not a user name",
            ),
            (
                Shortcuts {
                    password_hash: Some("$6$x$y".into()),
                    ..Shortcuts::default()
                },
                "add --user NAME",
            ),
            (
                Shortcuts {
                    user: Some("ada".into()),
                    password_hash: Some("hunter2".into()),
                    ..Shortcuts::default()
                },
                "not a password",
            ),
        ] {
            let err = shortcuts.render(None).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
        }
    }
}
