//! How corral's executables end on an error: the sentence and its causes on stderr, once each.

use std::process::ExitCode;

/// Prints `err` and its causes as sentences on stderr and returns the failure exit status.
pub fn report_error(err: &anyhow::Error) -> ExitCode {
    eprintln!("corral: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}
