//! Changing an instance's definition: settings one key at a time (`corral config set`,
//! `PATCH /1.0/instances/NAME`), or the whole definition replaced (`corral config edit`, `PUT
//! /1.0/instances/NAME`). Either is checked as a whole before it is saved; a running instance
//! keeps what it started with until its next start.

use crate::definition::Definition;
use crate::{CoreError, Manager};

/// Refuses a `new` definition for the instance `old` describes that changes what makes it that
/// instance: its name, type or uuid.
pub fn check_identity_kept(old: &Definition, new: &Definition) -> Result<(), CoreError> {
    let changed = [
        ("name", old.name != new.name),
        ("type", old.kind != new.kind),
        ("uuid", old.uuid != new.uuid),
    ];
    match changed.iter().find(|(_, changed)| *changed) {
        Some((field, _)) => Err(CoreError::IdentityChanged {
            name: old.name.clone(),
            field,
        }),
        None => Ok(()),
    }
}

impl Manager {
    /// Applies `settings` (`KEY`, `VALUE`, as `corral config set` takes them) to instance
    /// `name`'s definition, all or none; returns the definition saved.
    pub fn set_config(
        &self,
        name: &str,
        settings: &[(String, String)],
    ) -> Result<Definition, CoreError> {
        let _lock = self.lock(name)?;
        let mut definition = self.store().definition(name)?;
        for (key, value) in settings {
            definition.set(key.trim(), value.trim())?;
        }
        self.save_definition(&definition)
    }

    /// Replaces instance `name`'s definition with `new`, which must keep its name, type and
    /// uuid; returns the definition saved.
    pub fn replace_definition(
        &self,
        name: &str,
        new: &Definition,
    ) -> Result<Definition, CoreError> {
        let _lock = self.lock(name)?;
        check_identity_kept(&self.store().definition(name)?, new)?;
        self.save_definition(new)
    }
}
