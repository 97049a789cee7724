//! Whether a process recorded earlier is still the same live process (pids are reused).

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

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
