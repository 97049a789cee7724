//! Everything `corral info` shows of an instance in one value, as `corral info -o json` prints
//! it and `GET /1.0/instances/NAME/info` serves it (so a remote `info` renders what a local one
//! does).

use corral_control::Info;
use serde::{Deserialize, Serialize};

use crate::agent::AgentStatus;
use crate::definition::Definition;
use crate::lifecycle::Manager;
use crate::nic_status::NicStatus;
use crate::state::State;
use crate::CoreError;

#[derive(Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceReport {
    /// Its `instance.toml`.
    #[schema(value_type = Object)]
    pub definition: Definition,
    /// Its `state.json`, reconciled.
    #[schema(value_type = Object)]
    pub state: State,
    /// Its supervisor's counters while it runs.
    #[schema(value_type = Option<Object>)]
    pub live: Option<Info>,
    /// Its nics: network or bridge, host interface, MAC, address.
    #[schema(value_type = Vec<Object>)]
    pub nics: Vec<NicStatus>,
    /// What its guest agent answers while it runs (none for an application container).
    #[schema(value_type = Option<Object>)]
    pub agent: Option<AgentStatus>,
}

impl Manager {
    /// The [`InstanceReport`] of instance `name`: its supervisor and guest agent are asked
    /// while it runs (the agent for a moment only).
    pub fn report(&self, name: &str) -> Result<InstanceReport, CoreError> {
        let definition = self.store().definition(name)?;
        let state = self.state(name)?;
        let active = state.status.is_active();
        Ok(InstanceReport {
            live: active.then(|| self.live_info(name)).flatten(),
            agent: active.then(|| self.agent_status(name)).flatten(),
            nics: self.nic_status(name)?,
            definition,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_agent_answered_reads_back_as_it_was_written() {
        let guest = corral_agent::message::GuestInfo {
            hostname: "web".into(),
            kernel: "6.12".into(),
            uptime_secs: 42,
            ..Default::default()
        };
        for status in [
            AgentStatus::Answering { guest },
            AgentStatus::NotAnswering {
                reason: "no answer within 1 s".into(),
            },
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(
                serde_json::from_str::<AgentStatus>(&json).unwrap(),
                status,
                "{json}"
            );
        }
    }
}
