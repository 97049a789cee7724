//! Reads bounded in time as a whole, not per system call: an agent that trickles one byte at a
//! time cannot stretch a reply past its deadline.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

pub struct TimedReader<'a> {
    stream: &'a UnixStream,
    /// How long the first byte may take (`None`: as long as it takes).
    first_wait: Option<Duration>,
    /// How long the rest may take from the first byte on.
    within: Duration,
    deadline: Option<Instant>,
}

impl<'a> TimedReader<'a> {
    /// Everything read by `deadline`.
    pub fn until(stream: &'a UnixStream, deadline: Instant) -> Self {
        Self {
            stream,
            first_wait: None,
            within: Duration::ZERO,
            deadline: Some(deadline),
        }
    }

    /// The first byte within `first_wait`, everything else within `within` of it.
    pub fn after_first_byte(
        stream: &'a UnixStream,
        first_wait: Option<Duration>,
        within: Duration,
    ) -> Self {
        Self {
            stream,
            first_wait,
            within,
            deadline: None,
        }
    }
}

impl Read for TimedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let wait = match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                Some(left)
            }
            None => self.first_wait,
        };
        self.stream.set_read_timeout(wait)?;
        let n = self.stream.read(buf)?;
        if n > 0 && self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.within);
        }
        Ok(n)
    }
}
