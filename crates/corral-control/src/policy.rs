//! What a supervisor does when its guest powers off, reboots or crashes.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happens when the guest powers off, reboots or crashes (Xen's `on_*` domain settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The VMM process exits with the reason.
    Destroy,
    /// The guest is started again from scratch in the same process.
    Restart,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "destroy" => Ok(Action::Destroy),
            "restart" => Ok(Action::Restart),
            _ => Err(format!("invalid action {text:?}: use destroy or restart")),
        }
    }
}
