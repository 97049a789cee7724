//! `criu check`, run once per process: whether CRIU works on this host, and if not, CRIU's own
//! reason, so a refusal names what the host lacks instead of failing half way through a dump.

use std::process::Command;
use std::sync::OnceLock;

/// The program corral runs (found on `PATH`, like runc does).
pub const CRIU: &str = "criu";

/// Why CRIU cannot be used here: its own words, or that it is missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CriuUnavailable {
    pub reason: String,
}

/// The verdict of `criu check` on this host, asked once per process (the answer does not
/// change while corral runs, and the check takes tens of milliseconds).
pub fn check() -> Result<(), CriuUnavailable> {
    static VERDICT: OnceLock<Result<(), CriuUnavailable>> = OnceLock::new();
    VERDICT.get_or_init(run_check).clone()
}

fn run_check() -> Result<(), CriuUnavailable> {
    let output = match Command::new(CRIU).arg("check").output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CriuUnavailable {
                reason: "criu is not installed (Debian: apt-get install criu)".into(),
            })
        }
        Err(e) => {
            return Err(CriuUnavailable {
                reason: format!("criu could not be run ({e})"),
            })
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reason = reason_from_output(&stderr)
        .or_else(|| reason_from_output(&stdout))
        .unwrap_or_else(|| format!("`criu check` failed ({}) without saying why", output.status));
    Err(CriuUnavailable { reason })
}

/// CRIU's reason in its output: the last error it printed, followed by the first one when they
/// differ (CRIU reports the root cause first and its consequences after it, e.g. "Could not
/// initialize kernel features detection: vdso: Unexpected rt vDSO area bounds"). Without an
/// `Error (file:line):` line, the last non-empty line. `None` for empty output.
pub fn reason_from_output(output: &str) -> Option<String> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let errors: Vec<&str> = lines.iter().filter_map(|line| error_text(line)).collect();
    match (errors.first(), errors.last()) {
        (Some(first), Some(last)) if first != last => Some(format!(
            "{}: {}",
            last.trim_end_matches('.'),
            first.trim_end_matches('.')
        )),
        (Some(only), _) => Some(only.trim_end_matches('.').to_string()),
        _ => lines
            .last()
            .map(|line| line.trim_end_matches('.').to_string()),
    }
}

/// The message of a CRIU error line, `Error (criu/vdso.c:381): vdso: ...` → `vdso: ...`.
fn error_text(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("Error")?.trim_start();
    match rest.strip_prefix('(') {
        Some(located) => located.split_once("): ").map(|(_, text)| text.trim()),
        None => rest.strip_prefix(':').map(str::trim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What criu 3.17 prints on a kernel whose vDSO it cannot parse.
    const VDSO_FAILURE: &str = "\
Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds
Error (criu/vdso.c:613): vdso: Failed to fill self vdso symtable
Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed when initializing kerndat.
Error (criu/crtools.c:260): Could not initialize kernel features detection.
";

    #[test]
    fn the_reason_is_the_last_error_with_the_first_as_its_cause() {
        assert_eq!(
            reason_from_output(VDSO_FAILURE).unwrap(),
            "Could not initialize kernel features detection: vdso: Unexpected rt vDSO area bounds"
        );
    }

    #[test]
    fn a_single_error_is_the_reason_and_warnings_are_not() {
        let output = "Warn  (criu/cr-check.c:1230): Dirty tracking is OFF\n\
                      Error (criu/cr-check.c:1121): UFFD is not supported\n";
        assert_eq!(reason_from_output(output).unwrap(), "UFFD is not supported");
    }

    #[test]
    fn without_error_lines_the_last_line_is_the_reason() {
        let output = "\nsomething unexpected happened.\n\n";
        assert_eq!(
            reason_from_output(output).unwrap(),
            "something unexpected happened"
        );
        assert_eq!(reason_from_output("  \n"), None);
    }

    #[test]
    fn error_lines_lose_their_source_location() {
        assert_eq!(error_text("Error (criu/a.c:1): boom"), Some("boom"));
        assert_eq!(error_text("Error: plain"), Some("plain"));
        assert_eq!(error_text("Warn (criu/a.c:1): no"), None);
    }
}
