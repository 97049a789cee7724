//! `corral monitor-events`: the lifecycle events of every instance as they happen (`virsh
//! event --loop`, `incus monitor`), until interrupted.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use corral_core::events::LifecycleEvent;

use crate::output::Format;

#[derive(Args)]
pub struct MonitorArgs {
    /// Only this instance's events.
    #[arg(long, add = crate::completion::instances())]
    instance: Option<String>,
    /// One JSON object a line instead of text.
    #[arg(long, short, value_enum, default_value_t)]
    output: Format,
}

pub fn monitor(root: &Path, args: MonitorArgs) -> anyhow::Result<ExitCode> {
    let manager = crate::instance::manager(root)?;
    let mut watch = manager.watch_events();
    let mut stdout = std::io::stdout().lock();
    loop {
        for event in watch.next_batch() {
            if args
                .instance
                .as_ref()
                .is_some_and(|name| *name != event.instance)
            {
                continue;
            }
            let line = match args.output {
                Format::Json => serde_json::to_string(&event)?,
                Format::Text => describe(&event),
            };
            // A reader that went away (`| head`) ends the watch.
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// `TIME INSTANCE ACTION[ (REASON: DETAIL)]`, the time in seconds since the epoch with
/// milliseconds.
fn describe(event: &LifecycleEvent) -> String {
    let mut line = format!(
        "{}.{:03} {} {}",
        event.time_ms / 1000,
        event.time_ms % 1000,
        event.instance,
        event.action
    );
    match (&event.reason, &event.detail) {
        (Some(reason), Some(detail)) => line.push_str(&format!(" ({reason}: {detail})")),
        (Some(reason), None) => line.push_str(&format!(" ({reason})")),
        _ => {}
    }
    line
}
