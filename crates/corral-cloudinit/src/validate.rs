//! Checks of seed documents: what cloud-init would reject or ignore is refused before the guest
//! boots. `#cloud-config` must be a YAML mapping (and pass `cloud-init schema` where cloud-init
//! is installed on the host); other user-data types (scripts, includes, MIME) pass through as
//! they are; network-config must be YAML of version 1 or 2.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

use crate::error::SeedError;

/// The first line of a cloud-config document.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config";

/// First-line prefixes of the other user-data types cloud-init handles.
const OTHER_TYPES: &[&str] = &[
    "#!",
    "#include",
    "#cloud-boothook",
    "#part-handler",
    "#cloud-config-archive",
    "#cloud-config-jsonp",
    "## template: jinja",
    "Content-Type:",
    "MIME-Version:",
];

/// Checks the document of `field` (`user_data`, `vendor_data` or `network_config`).
pub fn document(field: &'static str, bytes: &[u8]) -> Result<(), SeedError> {
    match field {
        "network_config" => network_config(bytes),
        _ => user_data(field, bytes),
    }
}

/// Whether `bytes` is a `#cloud-config` document.
pub fn is_cloud_config(bytes: &[u8]) -> bool {
    first_line(bytes).is_some_and(|line| line.trim_end() == CLOUD_CONFIG_HEADER)
}

fn first_line(bytes: &[u8]) -> Option<&str> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()
}

/// user-data or vendor-data: empty, gzip (cloud-init unpacks it), `#cloud-config` YAML whose
/// top is a mapping, or one of the other types by its first line.
fn user_data(field: &'static str, bytes: &[u8]) -> Result<(), SeedError> {
    if bytes.is_empty() || bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(());
    }
    if is_cloud_config(bytes) {
        return cloud_config_mapping(field, bytes).map(drop);
    }
    let line = first_line(bytes).unwrap_or_default();
    if OTHER_TYPES.iter().any(|prefix| line.starts_with(prefix)) {
        return Ok(());
    }
    Err(SeedError::invalid(
        field,
        format!(
            "starts with {:?}, which cloud-init does not recognise; begin it with \
             #cloud-config (YAML) or #! (a script)",
            line.chars().take(40).collect::<String>()
        ),
    ))
}

/// The YAML mapping of a `#cloud-config` document (empty for an empty document).
pub fn cloud_config_mapping(
    field: &'static str,
    bytes: &[u8],
) -> Result<serde_yaml::Mapping, SeedError> {
    match serde_yaml::from_slice::<Value>(bytes)
        .map_err(|source| SeedError::Yaml { field, source })?
    {
        Value::Null => Ok(serde_yaml::Mapping::new()),
        Value::Mapping(mapping) => Ok(mapping),
        _ => Err(SeedError::invalid(
            field,
            "is #cloud-config but not a YAML mapping (key: value lines)",
        )),
    }
}

/// network-config: a mapping with `version: 1` or `2`, at the top or under `network:`.
fn network_config(bytes: &[u8]) -> Result<(), SeedError> {
    let field = "network_config";
    let value: Value =
        serde_yaml::from_slice(bytes).map_err(|source| SeedError::Yaml { field, source })?;
    let config = value.get("network").unwrap_or(&value);
    match config.get("version").and_then(Value::as_u64) {
        Some(1 | 2) => Ok(()),
        _ => Err(SeedError::invalid(
            field,
            "needs `version: 1` or `version: 2` (cloud-init's network config formats)",
        )),
    }
}

/// Runs `cloud-init schema --config-file` on a `#cloud-config` document when cloud-init is
/// installed on the host; other documents, or a host without cloud-init, pass.
pub fn schema(field: &'static str, bytes: &[u8]) -> Result<(), SeedError> {
    match corral_host::program::find("cloud-init") {
        Some(program) if is_cloud_config(bytes) => schema_with(&program, field, bytes),
        _ => Ok(()),
    }
}

/// [`schema`] with the cloud-init program at `program`; its report (first 10 lines) becomes the
/// error.
fn schema_with(program: &Path, field: &'static str, bytes: &[u8]) -> Result<(), SeedError> {
    let run_error = |source| SeedError::SchemaRun { field, source };
    let mut file = tempfile::NamedTempFile::new().map_err(run_error)?;
    file.write_all(bytes).map_err(run_error)?;
    let output = Command::new(program)
        .args(["schema", "--config-file"])
        .arg(file.path())
        .output()
        .map_err(run_error)?;
    if output.status.success() {
        return Ok(());
    }
    let mut report = String::from_utf8_lossy(&output.stderr).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stdout));
    let report = report
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take(10)
        .collect::<Vec<_>>()
        .join("; ");
    Err(SeedError::Schema { field, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_config_must_be_a_yaml_mapping() {
        document("user_data", b"#cloud-config\n{}\n").unwrap();
        document("user_data", b"#cloud-config\nruncmd: [[touch, /x]]\n").unwrap();
        document("user_data", b"#cloud-config\n").unwrap();
        let err = document("user_data", b"#cloud-config\nusers: [unclosed\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cloud_init.user_data is not valid YAML"),
            "{err}"
        );
        let err = document("vendor_data", b"#cloud-config\n- a\n- b\n").unwrap_err();
        assert!(
            err.to_string().contains("cloud_init.vendor_data")
                && err.to_string().contains("not a YAML mapping"),
            "{err}"
        );
    }

    #[test]
    fn other_user_data_types_pass_and_unknown_ones_are_named() {
        document("user_data", b"#!/bin/sh\necho hi: [\n").unwrap();
        document("user_data", b"Content-Type: multipart/mixed; boundary=x\n").unwrap();
        document("user_data", b"").unwrap();
        let err = document("user_data", b"users:\n  - name: a\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud_init.user_data") && err.contains("#cloud-config"),
            "{err}"
        );
        // The archive type is not #cloud-config, though it starts like it.
        assert!(!is_cloud_config(b"#cloud-config-archive\n- a\n"));
    }

    #[test]
    fn a_schema_report_becomes_the_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for cloud-init: accepts documents without "bogus", reports the rest.
        let program = dir.path().join("cloud-init");
        std::fs::write(
            &program,
            "#!/bin/sh\n[ \"$1 $2\" = \"schema --config-file\" ] || exit 9\n\
             if grep -q bogus \"$3\"; then\n\
             echo 'Error: Cloud config schema errors: bogus: unknown key' >&2; exit 1\nfi\n",
        )
        .unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        schema_with(&program, "user_data", b"#cloud-config\nruncmd: []\n").unwrap();
        let err = schema_with(&program, "vendor_data", b"#cloud-config\nbogus: 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cloud_init.vendor_data does not pass `cloud-init schema`: Error: Cloud config \
             schema errors: bogus: unknown key"
        );
    }

    #[test]
    fn network_config_needs_a_known_version() {
        document("network_config", b"version: 2\nethernets: {}\n").unwrap();
        document("network_config", b"network:\n  version: 1\n  config: []\n").unwrap();
        let err = document("network_config", b"version: 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud_init.network_config") && err.contains("version: 2"),
            "{err}"
        );
        let err = document("network_config", b"version: [\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid YAML"), "{err}");
    }
}
