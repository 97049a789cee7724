//! The brakes on restart policies, shared by both supervisors: each automatic restart waits a
//! little longer than the one before (exponential, capped), and a guest restarted `burst` times
//! within `interval_secs` is given up on (systemd's `StartLimitBurst`/`StartLimitIntervalSec`),
//! so a guest that crashes at once costs a few restarts, not thousands.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The wait before the first restart of a series.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two restarts.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// A run this long ends a series: the next restart waits [`FIRST_DELAY`] again.
const STEADY_RUN: Duration = Duration::from_secs(30);

/// How many automatic restarts a supervisor makes before giving up: at most `burst` within any
/// `interval_secs` seconds. `interval_secs = 0` turns the limit off (the waits still grow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartLimit {
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
}

fn default_burst() -> u32 {
    5
}

fn default_interval_secs() -> u64 {
    10
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit {
            burst: default_burst(),
            interval_secs: default_interval_secs(),
        }
    }
}

impl std::fmt::Display for RestartLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} restarts within {} s", self.burst, self.interval_secs)
    }
}

impl std::str::FromStr for RestartLimit {
    type Err = String;

    /// `BURST/SECONDS`, e.g. `5/10`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid restart limit {text:?}: use BURST/SECONDS, e.g. 5/10");
        let (burst, interval) = text.split_once('/').ok_or_else(bad)?;
        Ok(RestartLimit {
            burst: burst.trim().parse().map_err(|_| bad())?,
            interval_secs: interval.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// What to do about a guest the policy says to restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Restart it after this wait.
    RestartAfter(Duration),
    /// The limit is reached: end the run (`restart-limit`).
    GiveUp,
}

/// The restarts of one supervisor, on the monotonic clock ([`monotonic_now`]), so the history
/// survives a supervisor that re-executes itself (the container monitor) as text
/// ([`Restarts::encode`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restarts {
    /// When the restarts inside the current interval happen.
    recent: VecDeque<Duration>,
    /// Restarts since the guest last ran steadily: the exponent of the next wait.
    series: u32,
}

impl Restarts {
    /// Decides about a guest that ran for `ran_for` and that the policy says to restart, `now`.
    pub fn next(&mut self, limit: RestartLimit, now: Duration, ran_for: Duration) -> Verdict {
        if ran_for >= STEADY_RUN {
            self.series = 0;
        }
        if limit.interval_secs > 0 {
            let interval = Duration::from_secs(limit.interval_secs);
            self.recent.retain(|&at| now.saturating_sub(at) < interval);
            if self.recent.len() >= limit.burst as usize {
                return Verdict::GiveUp;
            }
        }
        let delay = FIRST_DELAY
            .saturating_mul(1 << self.series.min(16))
            .min(MAX_DELAY);
        self.series = self.series.saturating_add(1);
        self.recent.push_back(now + delay);
        Verdict::RestartAfter(delay)
    }

    /// The history as one line: `SERIES:MS,MS,...` (restart times in ms on the monotonic clock).
    pub fn encode(&self) -> String {
        let times: Vec<String> = self
            .recent
            .iter()
            .map(|at| at.as_millis().to_string())
            .collect();
        format!("{}:{}", self.series, times.join(","))
    }

    /// Reads [`Restarts::encode`]'s text; anything malformed is an empty history.
    pub fn decode(text: &str) -> Restarts {
        let parse = || -> Option<Restarts> {
            let (series, times) = text.split_once(':')?;
            let recent = times
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().ok().map(Duration::from_millis))
                .collect::<Option<VecDeque<_>>>()?;
            Some(Restarts {
                recent,
                series: series.parse().ok()?,
            })
        };
        parse().unwrap_or_default()
    }
}

/// The monotonic clock (`CLOCK_MONOTONIC`): the same across `exec`, never set back.
pub fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANT: Duration = Duration::ZERO;

    #[test]
    fn waits_double_up_to_a_cap_and_a_steady_run_starts_over() {
        let mut restarts = Restarts::default();
        let unlimited = RestartLimit {
            burst: 0,
            interval_secs: 0,
        };
        let mut now = Duration::from_secs(100);
        let mut waits = Vec::new();
        for _ in 0..9 {
            match restarts.next(unlimited, now, INSTANT) {
                Verdict::RestartAfter(wait) => waits.push(wait.as_millis()),
                Verdict::GiveUp => panic!("no limit was set"),
            }
            now += Duration::from_secs(1);
        }
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(
            restarts.next(unlimited, now, STEADY_RUN),
            Verdict::RestartAfter(FIRST_DELAY)
        );
    }

    #[test]
    fn the_restart_past_the_burst_within_the_interval_gives_up() {
        let limit = RestartLimit::default();
        let mut restarts = Restarts::default();
        let mut now = Duration::from_secs(1000);
        for _ in 0..5 {
            let Verdict::RestartAfter(wait) = restarts.next(limit, now, INSTANT) else {
                panic!("gave up too early");
            };
            now += wait;
        }
        assert_eq!(restarts.next(limit, now, INSTANT), Verdict::GiveUp);
        // Restarts spread wider than the interval never reach the limit.
        let mut restarts = Restarts::default();
        for second in 0..20 {
            let now = Duration::from_secs(1000 + 3 * second);
            assert_ne!(
                restarts.next(limit, now, STEADY_RUN),
                Verdict::GiveUp,
                "restart {second}"
            );
        }
    }

    #[test]
    fn the_history_survives_its_text_form() {
        let mut restarts = Restarts::default();
        restarts.next(RestartLimit::default(), Duration::from_secs(7), INSTANT);
        restarts.next(RestartLimit::default(), Duration::from_secs(8), INSTANT);
        assert_eq!(Restarts::decode(&restarts.encode()), restarts);
        assert_eq!(Restarts::decode("garbage"), Restarts::default());
        assert_eq!(Restarts::decode("1:2,x"), Restarts::default());
    }

    #[test]
    fn a_limit_given_in_part_takes_the_rest_from_the_default() {
        let limit: RestartLimit = serde_json::from_str("{\"burst\": 3}").unwrap();
        assert_eq!(
            limit,
            RestartLimit {
                burst: 3,
                interval_secs: 10
            }
        );
        assert_eq!(limit.to_string(), "3 restarts within 10 s");
        assert_eq!("3/10".parse::<RestartLimit>(), Ok(limit));
        assert!("3".parse::<RestartLimit>().is_err());
        assert!("x/10".parse::<RestartLimit>().is_err());
    }
}
