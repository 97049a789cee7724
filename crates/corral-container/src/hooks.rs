//! OCI hooks: programs run at lifecycle points with the container's state JSON on stdin.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::OciState;

/// Runs each hook in order; the first failure stops the rest and is returned.
pub fn run_hooks(kind: &'static str, hooks: &[Hook], state: &OciState) -> Result<()> {
    let json = serde_json::to_vec(state).map_err(|source| Error::EncodeState {
        id: state.id.clone(),
        source,
    })?;
    for hook in hooks {
        run_hook(kind, hook, &json)?;
    }
    Ok(())
}

/// Runs hooks whose failure the spec says only to log (poststart, poststop): every hook runs,
/// whatever the ones before it did.
pub fn run_hooks_logging_failures(kind: &'static str, hooks: &[Hook], state: &OciState) {
    for hook in hooks {
        if let Err(err) = run_hooks(kind, std::slice::from_ref(hook), state) {
            tracing::warn!("{err}");
        }
    }
}

fn run_hook(kind: &'static str, hook: &Hook, state_json: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        kind,
        path: hook.path().clone(),
        reason,
    };
    let run_error = |source| Error::HookRun {
        kind,
        path: hook.path().clone(),
        source,
    };
    let mut command = Command::new(hook.path());
    if let Some(args) = hook.args() {
        // args[0] is argv[0], like execv.
        if let Some((argv0, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut command, argv0);
            command.args(rest);
        }
    }
    command.env_clear();
    for entry in hook.env().iter().flatten() {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .map(|secs| Instant::now() + Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(1)));
    loop {
        if let Some(status) = child.try_wait().map_err(run_error)? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            return Err(fail(format!("{status}: {}", stderr.trim())));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;
    use oci_spec::runtime::HookBuilder;

    fn state() -> OciState {
        OciState {
            oci_version: "1.0.2".into(),
            id: "c1".into(),
            status: Status::Created,
            pid: 42,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: String::new(),
            owner: String::new(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn hooks_get_the_state_on_stdin_and_their_args() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {}; echo \" $0\" >> {}", out.display(), out.display()),
            ])
            .build()
            .unwrap();
        run_hooks("createRuntime", &[hook], &state()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains("\"id\":\"c1\"") && text.contains("\"pid\":42"),
            "{text}"
        );
        assert!(text.trim_end().ends_with(" sh"), "{text}");
    }

    #[test]
    fn a_failing_hook_stops_the_rest_and_reports_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("second-ran");
        let failing = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                "echo broken >&2; exit 3".into(),
            ])
            .build()
            .unwrap();
        let second = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("touch {}", marker.display()),
            ])
            .build()
            .unwrap();
        let err = run_hooks("prestart", &[failing, second], &state()).unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        assert!(!marker.exists());
    }

    #[test]
    fn logged_hooks_all_run_even_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("second-ran");
        let failing = HookBuilder::default().path("/bin/false").build().unwrap();
        let second = HookBuilder::default()
            .path("/bin/sh")
            .args(vec![
                "sh".into(),
                "-c".into(),
                format!("touch {}", marker.display()),
            ])
            .build()
            .unwrap();
        run_hooks_logging_failures("poststop", &[failing, second], &state());
        assert!(marker.exists());
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let hook = HookBuilder::default()
            .path("/bin/sleep")
            .args(vec!["sleep".into(), "30".into()])
            .timeout(1i64)
            .build()
            .unwrap();
        let start = Instant::now();
        let err = run_hooks("poststart", &[hook], &state()).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
