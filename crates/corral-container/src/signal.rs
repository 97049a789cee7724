//! Signal names as runc's `kill` accepts them: `TERM`, `SIGTERM`, `15`.

use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Parses a signal name or number.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let invalid = || Error::InvalidSignal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| invalid());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_parse() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
    }

    #[test]
    fn nonsense_is_an_invalid_signal() {
        for bad in ["", "FOO", "0", "65", "-1", "SIG"] {
            let err = parse_signal(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid signal"),
                "{bad}: {err}"
            );
        }
    }
}
