//! Progress for long operations: shown on a terminal, silent in scripts.

use std::io::IsTerminal;
use std::time::Duration;

/// A spinner with a message, drawn only when stderr is a terminal.
pub struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Spinner {
    pub fn start(message: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar: Some(bar) }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Bars with bytes, rate and time left for corral-image's long work, drawn only when stderr is
/// a terminal (scripts see nothing).
pub struct Bars {
    bar: Option<std::sync::Mutex<Option<indicatif::ProgressBar>>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            bar: std::io::stderr()
                .is_terminal()
                .then(|| std::sync::Mutex::new(None)),
        }
    }

    fn with(&self, act: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        if let Some(bar) = &self.bar {
            if let Ok(mut bar) = bar.lock() {
                act(&mut bar);
            }
        }
    }

    pub fn finish(&self) {
        self.with(|bar| {
            if let Some(bar) = bar.take() {
                bar.finish_and_clear();
            }
        });
    }
}

impl corral_image::progress::Progress for Bars {
    fn begin(&self, what: &str, total: Option<u64>) {
        self.with(|bar| {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            let new = match total {
                Some(total) => indicatif::ProgressBar::new(total).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::new_spinner().with_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {msg} {bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            new.set_message(what.to_string());
            new.enable_steady_tick(Duration::from_millis(100));
            *bar = Some(new);
        });
    }

    fn advance(&self, bytes: u64) {
        self.with(|bar| {
            if let Some(bar) = bar {
                bar.inc(bytes);
            }
        });
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}
