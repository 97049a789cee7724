//! Signal names as runc's `kill` accepts them: `TERM`, `SIGTERM`, `15`, and the real-time
//! signals as `RTMIN+3` or `SIGRTMAX-1` (systemd halts on SIGRTMIN+3).

use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// The first real-time signal as glibc programs (systemd) number them: the kernel's 32 plus the
/// two glibc keeps for itself. runc and podman count `RTMIN+N` from the same base.
const RTMIN: i32 = 34;
/// The last signal number.
const RTMAX: i32 = 64;

/// A signal by number: the standard ones and the real-time ones, which `nix` cannot name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalNumber(i32);

impl SignalNumber {
    pub const TERM: SignalNumber = SignalNumber(libc::SIGTERM);
    pub const KILL: SignalNumber = SignalNumber(libc::SIGKILL);

    /// The number kill(2) takes.
    pub fn raw(self) -> i32 {
        self.0
    }
}

impl From<Signal> for SignalNumber {
    fn from(signal: Signal) -> Self {
        SignalNumber(signal as i32)
    }
}

impl std::fmt::Display for SignalNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Signal::try_from(self.0) {
            Ok(signal) => write!(f, "{signal}"),
            Err(_) if self.0 >= RTMIN => write!(f, "SIGRTMIN+{}", self.0 - RTMIN),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

impl FromStr for SignalNumber {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        parse_signal(text)
    }
}

/// Parses a signal name or number.
pub fn parse_signal(text: &str) -> Result<SignalNumber> {
    let invalid = || Error::InvalidSignal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return match number {
            1..=RTMAX if Signal::try_from(number).is_ok() || number >= RTMIN => {
                Ok(SignalNumber(number))
            }
            _ => Err(invalid()),
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: i32, rest: &str, sign: i32| -> Result<SignalNumber> {
        let offset = match rest {
            "" => 0,
            _ => rest.parse::<i32>().map_err(|_| invalid())?,
        };
        let number = base + sign * offset;
        (RTMIN..=RTMAX)
            .contains(&number)
            .then_some(SignalNumber(number))
            .ok_or_else(invalid)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return realtime(RTMIN, rest.strip_prefix('+').unwrap_or(rest), 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return realtime(RTMAX, rest.strip_prefix('-').unwrap_or(rest), -1);
    }
    Signal::from_str(&format!("SIG{name}"))
        .map(SignalNumber::from)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_parse() {
        assert_eq!(parse_signal("TERM").unwrap(), SignalNumber::TERM);
        assert_eq!(parse_signal("sigkill").unwrap(), SignalNumber::KILL);
        assert_eq!(parse_signal("9").unwrap(), SignalNumber::KILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1.into());
    }

    #[test]
    fn real_time_signals_count_from_glibcs_sigrtmin() {
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap().raw(), 37);
        assert_eq!(parse_signal("rtmin").unwrap().raw(), 34);
        assert_eq!(parse_signal("RTMAX-1").unwrap().raw(), 63);
        assert_eq!(parse_signal("37").unwrap().to_string(), "SIGRTMIN+3");
    }

    #[test]
    fn nonsense_is_an_invalid_signal() {
        for bad in [
            "", "FOO", "0", "65", "-1", "SIG", "32", "RTMIN+31", "RTMIN-1", "RTMIN+x",
        ] {
            let err = parse_signal(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid signal"),
                "{bad}: {err}"
            );
        }
    }
}
