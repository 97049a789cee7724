//! Whether a process recorded earlier is still the same live process (pids are reused), and
//! what a live one uses (CPU time, resident memory).

/// Start time of process `pid` in clock ticks since boot, or `None` when it does not exist.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields from 3 on; starttime is field 22.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is the process that had `start_ticks` (it may be a zombie awaiting its reaper).
pub fn process_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    match (process_start_ticks(pid), start_ticks) {
        (Some(now), Some(then)) => now == then && !is_zombie(pid),
        (Some(_), None) => !is_zombie(pid),
        (None, _) => false,
    }
}

/// The CPU time process `pid` has used, user and system, in seconds (its threads included).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // utime and stime are fields 14 and 15; fields from 3 on follow the name.
    let user: u64 = fields.nth(11)?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some((user + system) as f64 / ticks as f64)
}

/// The memory process `pid` has resident, in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu_time_and_memory() {
        let pid = std::process::id();
        // Burn a little CPU so the count is above zero on any clock tick.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(x != 1);
        let cpu = cpu_seconds(pid).unwrap();
        assert!(cpu > 0.0 && cpu < 3600.0, "{cpu}");
        let rss = resident_bytes(pid).unwrap();
        assert!(rss > 1 << 20, "{rss}");
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
