//! Where the log records of corral and its supervisors go: stderr, a supervisor's rotated log
//! file, or the journal.

use std::io::IsTerminal;

use crate::journal;
use crate::log::{StdioLog, DEFAULT_LOG_LIMIT, SUPERVISOR_LOG_ENV};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Full};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Logs go to stderr, filtered by `CORRAL_LOG` (tracing's env-filter syntax), warnings by
/// default, in colour only on a terminal. When stderr is a journal stream (under systemd, or a
/// supervisor launched from there) each line carries its priority and no time or level, which
/// the journal records itself. A supervisor the instance manager launched with
/// `CORRAL_SUPERVISOR_LOG` rotates its log file (stderr) like `console.log`, from the thread
/// that logs when `rotate_from_writers`. `events`, when given (`corral serve`'s event feed),
/// also takes every record at info and above, whatever `CORRAL_LOG` lets through to stderr.
pub fn init(rotate_from_writers: bool, events: Option<Box<dyn Layer<Registry> + Send + Sync>>) {
    let filter = EnvFilter::try_from_env("CORRAL_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let logger = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let stderr: Box<dyn Layer<Registry> + Send + Sync> = if journal::stderr_is_journal() {
        let lines = format::format()
            .with_target(false)
            .without_time()
            .with_level(false)
            .with_ansi(false);
        logger
            .event_format(JournalLine(lines))
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        match std::env::var_os(SUPERVISOR_LOG_ENV) {
            Some(path) if rotate_from_writers => {
                // The log lives as long as the process.
                let log: &'static StdioLog =
                    Box::leak(Box::new(StdioLog::new(path, DEFAULT_LOG_LIMIT)));
                logger.with_writer(move || log.writer()).boxed()
            }
            _ => logger.with_writer(std::io::stderr).boxed(),
        }
    };
    let mut layers = vec![stderr.with_filter(filter).boxed()];
    layers.extend(events.map(|layer| layer.with_filter(LevelFilter::INFO).boxed()));
    tracing_subscriber::registry().with(layers).init();
}

/// A log record as a journal stream line: `<N>` (its priority, sd-daemon(3)), then the text.
struct JournalLine(format::Format<Full, ()>);

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", journal::priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}
