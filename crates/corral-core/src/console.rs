//! An instance's console for a front end: what it printed (`console.log`, after its rotated
//! `console.log.1`), and the socket to attach to while it runs (the supervisor's console hub
//! takes one client at a time).

use std::path::PathBuf;

use crate::{CoreError, Manager};

impl Manager {
    /// Everything instance `name`'s console printed that is still kept, oldest first. The logs
    /// are in `run/`, which a jailed VMM owns: a link planted there is not followed.
    pub fn console_log(&self, name: &str) -> Result<Vec<u8>, CoreError> {
        let log = self.paths(name)?.console_log();
        let mut rotated = log.clone().into_os_string();
        rotated.push(".1");
        let mut bytes = Vec::new();
        for path in [PathBuf::from(rotated), log] {
            if let Ok(part) = corral_control::log::read_log(&path) {
                bytes.extend(part);
            }
        }
        Ok(bytes)
    }

    /// The console socket of running instance `name`.
    pub fn console_socket(&self, name: &str) -> Result<PathBuf, CoreError> {
        if !self.state(name)?.status.is_active() {
            return Err(CoreError::NotRunning(name.to_owned()));
        }
        Ok(self.paths(name)?.console_socket())
    }
}
