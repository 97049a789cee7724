//! The build spec (`corral image build SPEC.toml`): plain TOML, unknown fields refused, every
//! error naming the line and field. `${NAME}` in paths, a VM's cmdline and the source's image
//! reference expands to a variable of `[variables]` or `--var NAME=VALUE`, so a spec can name files that live
//! outside the repository it is kept in (a kernel built elsewhere) without naming this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_control::size::MemorySize;
use corral_image::metadata::ContainerDefaults;
use serde::Deserialize;

/// A spec as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The default alias of the images built.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The OS and release recorded in the images; read from the rootfs's `/etc/os-release` when
    /// absent.
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub release: Option<String>,
    /// Values for `${NAME}` in paths; `--var NAME=VALUE` overrides them.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub source: SourceSpec,
    /// What a container made from the image runs (the source's defaults when absent).
    #[serde(default)]
    pub container: Option<ContainerDefaults>,
    #[serde(default)]
    pub provision: Vec<StepSpec>,
    #[serde(default)]
    pub output: Vec<Output>,
}

/// `[source]` as written: exactly one of its fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default)]
    pub busybox: bool,
    #[serde(default)]
    pub debian: Option<DebianSource>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub oci: Option<String>,
}

/// A Debian tree made by mmdebstrap.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// `bookworm`, `trixie`, ...
    pub suite: String,
    /// mmdebstrap's `--variant` (`minbase` by default).
    #[serde(default = "minbase")]
    pub variant: String,
    /// Packages installed on top (`--include`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// The archive; by default the host's apt sources' Debian mirror.
    #[serde(default)]
    pub mirror: Option<String>,
}

fn minbase() -> String {
    "minbase".into()
}

/// Where a build starts from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The host's static busybox and its applet links.
    Busybox,
    Debian {
        suite: String,
        variant: String,
        packages: Vec<String>,
        mirror: Option<String>,
    },
    /// Another image of the store (alias or fingerprint).
    Image(String),
    /// An OCI layout directory or oci-archive.
    Oci(PathBuf),
}

/// `[[provision]]` as written: exactly one of its fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    #[serde(default)]
    pub file: Option<FileCopy>,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub script: Option<String>,
    /// `agent = true`: corral's guest agent installed and started by the image's init.
    #[serde(default)]
    pub agent: bool,
}

/// A file copied from beside the spec into the rootfs.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCopy {
    /// Relative to the spec's directory.
    pub source: PathBuf,
    /// Absolute inside the rootfs.
    pub destination: String,
    /// Octal, `"0644"` by default.
    #[serde(default)]
    pub mode: Option<String>,
}

/// One provisioning step, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    File {
        source: PathBuf,
        destination: String,
        mode: u32,
    },
    /// A `/bin/sh -c` command line run in a container on the rootfs.
    Shell(String),
    /// A script file from beside the spec, run the same way.
    Script(PathBuf),
    /// The guest agent put in as `corral guest install-agent` does it.
    Agent,
}

impl Step {
    /// A few words for messages and the log.
    pub fn describe(&self) -> String {
        match self {
            Step::File { destination, .. } => format!("file {destination}"),
            Step::Shell(command) => {
                let first = command.lines().next().unwrap_or("");
                let short: String = first.chars().take(60).collect();
                if short.len() < command.len() {
                    format!("shell `{short}...`")
                } else {
                    format!("shell `{short}`")
                }
            }
            Step::Script(path) => format!("script {}", path.display()),
            Step::Agent => "the guest agent".to_string(),
        }
    }
}

/// An `[[output]]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Output {
    /// A container image in the store.
    Container {
        #[serde(default)]
        alias: Vec<String>,
    },
    /// A VM image in the store: an ext4 disk of the rootfs (no partition table) in qcow2.
    Vm {
        /// The disk's virtual size (`2G`).
        size: String,
        /// Copied into the disk as `/boot/vmlinuz-corral`.
        kernel: PathBuf,
        #[serde(default)]
        initrd: Option<PathBuf>,
        #[serde(default)]
        cmdline: Option<String>,
        #[serde(default)]
        alias: Vec<String>,
    },
    /// An OCI image (a layout directory, or an oci-archive with `archive = true`).
    Oci {
        path: PathBuf,
        #[serde(default)]
        archive: bool,
    },
    /// The canonical rootfs tarball.
    Tarball { path: PathBuf },
}

impl Output {
    pub fn kind(&self) -> &'static str {
        match self {
            Output::Container { .. } => "container",
            Output::Vm { .. } => "vm",
            Output::Oci { .. } => "oci",
            Output::Tarball { .. } => "tarball",
        }
    }

    /// The extra aliases of a store output.
    pub fn extra_aliases(&self) -> Option<&[String]> {
        match self {
            Output::Container { alias } | Output::Vm { alias, .. } => Some(alias),
            _ => None,
        }
    }
}

/// A spec read, expanded and checked: what a build does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub os: Option<String>,
    pub release: Option<String>,
    pub source: Source,
    pub container: Option<ContainerDefaults>,
    pub steps: Vec<Step>,
    pub outputs: Vec<Output>,
    /// The directory relative paths are taken from.
    pub dir: PathBuf,
}

/// The default cmdline of a VM output: the serial console, root on the first virtio disk.
pub const DEFAULT_VM_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the build spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid build spec {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Plan {
    /// Reads the spec at `path`, with `variables` (`--var`) overriding its `[variables]`.
    pub fn load(path: &Path, variables: &[(String, String)]) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::parse(&text, dir, variables).map_err(|message| SpecError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks spec text; the error is one sentence naming the field.
    pub fn parse(text: &str, dir: PathBuf, variables: &[(String, String)]) -> Result<Self, String> {
        let spec: Spec = toml::from_str(text)
            .map_err(|err| crate::definition::describe_toml_error(text, &err))?;
        let mut values = spec.variables.clone();
        for (name, value) in variables {
            if !values.contains_key(name) {
                return Err(format!(
                    "--var {name}: the spec has no variable `{name}` (its [variables]: {})",
                    names(&values)
                ));
            }
            values.insert(name.clone(), value.clone());
        }
        let expand = |field: &str, value: &str| expand(field, value, &values);
        let expand_path = |field: &str, path: &Path| -> Result<PathBuf, String> {
            Ok(PathBuf::from(expand(field, &path.to_string_lossy())?))
        };

        crate::build::check_alias("name", &spec.name)?;
        let source = match (
            spec.source.busybox,
            &spec.source.debian,
            &spec.source.image,
            &spec.source.oci,
        ) {
            (true, None, None, None) => Source::Busybox,
            (false, Some(debian), None, None) => {
                if debian.suite.is_empty() {
                    return Err(
                        "field `source.debian.suite`: is empty; name a suite such as \"bookworm\""
                            .into(),
                    );
                }
                Source::Debian {
                    suite: debian.suite.clone(),
                    variant: debian.variant.clone(),
                    packages: debian.packages.clone(),
                    mirror: debian.mirror.clone(),
                }
            }
            (false, None, Some(image), None) => Source::Image(expand("source.image", image)?),
            (false, None, None, Some(oci)) => {
                Source::Oci(PathBuf::from(expand("source.oci", oci)?))
            }
            _ => {
                return Err(
                    "section `[source]`: give exactly one of busybox = true, debian = {...}, \
                     image = \"ALIAS\" or oci = \"PATH\""
                        .into(),
                )
            }
        };

        let mut steps = Vec::new();
        for (index, step) in spec.provision.iter().enumerate() {
            let field = format!("provision[{}]", index + 1);
            steps.push(match (&step.file, &step.shell, &step.script, step.agent) {
                (Some(file), None, None, false) => {
                    if !file.destination.starts_with('/') {
                        return Err(format!(
                            "field `{field}.file.destination`: {:?} is not an absolute path in \
                             the image",
                            file.destination
                        ));
                    }
                    let mode = match &file.mode {
                        None => 0o644,
                        Some(mode) => u32::from_str_radix(mode, 8)
                            .ok()
                            .filter(|mode| *mode <= 0o7777)
                            .ok_or_else(|| {
                                format!(
                                    "field `{field}.file.mode`: {mode:?} is not an octal file \
                                     mode such as \"0644\""
                                )
                            })?,
                    };
                    Step::File {
                        source: expand_path(&format!("{field}.file.source"), &file.source)?,
                        destination: expand(
                            &format!("{field}.file.destination"),
                            &file.destination,
                        )?,
                        mode,
                    }
                }
                (None, Some(shell), None, false) => Step::Shell(shell.clone()),
                (None, None, Some(script), false) => {
                    Step::Script(PathBuf::from(expand(&format!("{field}.script"), script)?))
                }
                (None, None, None, true) => Step::Agent,
                _ => {
                    return Err(format!(
                        "`{field}`: give exactly one of file = {{...}}, shell = \"COMMAND\", \
                         script = \"PATH\" or agent = true"
                    ))
                }
            });
        }

        if spec.output.is_empty() {
            return Err("no [[output]]: add one, such as [[output]] type = \"container\"".into());
        }
        let mut outputs = Vec::new();
        let mut store_aliases: BTreeMap<String, usize> = BTreeMap::new();
        for (index, output) in spec.output.iter().enumerate() {
            let field = format!("output[{}]", index + 1);
            let output = match output {
                Output::Container { .. } | Output::Vm { .. } => {
                    let extra = output.extra_aliases().unwrap_or_default();
                    for alias in std::iter::once(&spec.name).chain(extra) {
                        crate::build::check_alias(&format!("{field}.alias"), alias)?;
                        if let Some(other) = store_aliases.insert(alias.clone(), index + 1) {
                            return Err(format!(
                                "`{field}`: output[{other}] is also named {alias:?}; an alias \
                                 names one image, so keep one store output per spec"
                            ));
                        }
                    }
                    match output {
                        Output::Vm {
                            size,
                            kernel,
                            initrd,
                            cmdline,
                            alias,
                        } => {
                            size.parse::<MemorySize>().map_err(|_| {
                                format!(
                                    "field `{field}.size`: {size:?} is not a size such as \"2G\""
                                )
                            })?;
                            Output::Vm {
                                size: size.clone(),
                                kernel: expand_path(&format!("{field}.kernel"), kernel)?,
                                initrd: initrd
                                    .as_deref()
                                    .map(|p| expand_path(&format!("{field}.initrd"), p))
                                    .transpose()?,
                                cmdline: cmdline
                                    .as_deref()
                                    .map(|c| expand(&format!("{field}.cmdline"), c))
                                    .transpose()?,
                                alias: alias.clone(),
                            }
                        }
                        other => other.clone(),
                    }
                }
                Output::Oci { path, archive } => Output::Oci {
                    path: expand_path(&format!("{field}.path"), path)?,
                    archive: *archive,
                },
                Output::Tarball { path } => Output::Tarball {
                    path: expand_path(&format!("{field}.path"), path)?,
                },
            };
            outputs.push(output);
        }

        Ok(Plan {
            name: spec.name,
            description: spec.description,
            os: spec.os,
            release: spec.release,
            source,
            container: spec.container,
            steps,
            outputs,
            dir,
        })
    }

    /// A path of the spec, relative to its directory.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.dir.join(path)
    }
}

fn names(values: &BTreeMap<String, String>) -> String {
    if values.is_empty() {
        "none".into()
    } else {
        values.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Replaces each `${NAME}` in `value` with the variable's value.
fn expand(field: &str, value: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("field `{field}`: `${{` without a closing `}}` in {value:?}"))?;
        let name = &after[..end];
        let replacement = values.get(name).ok_or_else(|| {
            format!(
                "field `{field}`: no variable `{name}`; define it in [variables] (known: {})",
                names(values)
            )
        })?;
        out.push_str(replacement);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Plan, String> {
        Plan::parse(text, PathBuf::from("specs"), &[])
    }

    const BUSYBOX: &str = r#"
name = "busybox"
[source]
busybox = true
[[provision]]
file = { source = "inittab", destination = "/etc/inittab" }
[[provision]]
shell = "echo hi"
[[provision]]
agent = true
[[output]]
type = "container"
alias = ["busybox/latest"]
[[output]]
type = "tarball"
path = "out/busybox.tar"
"#;

    #[test]
    fn a_full_spec_becomes_a_plan() {
        let plan = parse(BUSYBOX).unwrap();
        assert_eq!(plan.source, Source::Busybox);
        assert_eq!(
            plan.steps,
            [
                Step::File {
                    source: "inittab".into(),
                    destination: "/etc/inittab".into(),
                    mode: 0o644
                },
                Step::Shell("echo hi".into()),
                Step::Agent
            ]
        );
        assert_eq!(plan.outputs.len(), 2);
        assert_eq!(plan.path(Path::new("out/x")), Path::new("specs/out/x"));
    }

    #[test]
    fn unknown_fields_are_named_with_their_line() {
        let err = parse(&BUSYBOX.replace("alias = [", "aliases = [")).unwrap_err();
        // An output is a tagged table: its errors point at the table's header line.
        assert!(
            err.contains("line 11") && err.contains("`aliases`"),
            "{err}"
        );
        let err = parse(&BUSYBOX.replace("type = \"tarball\"", "type = \"iso\"")).unwrap_err();
        assert!(err.contains("iso"), "{err}");
    }

    #[test]
    fn a_source_needs_exactly_one_kind() {
        let err =
            parse(&BUSYBOX.replace("busybox = true", "busybox = true\nimage = \"x\"")).unwrap_err();
        assert!(err.contains("[source]"), "{err}");
        let err = parse(&BUSYBOX.replace("busybox = true", "")).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
    }

    #[test]
    fn steps_are_checked() {
        let err = parse(&BUSYBOX.replace("\"/etc/inittab\"", "\"etc/inittab\"")).unwrap_err();
        assert!(err.contains("provision[1].file.destination"), "{err}");
        let err = parse(&BUSYBOX.replace(
            "destination = \"/etc/inittab\"",
            "destination = \"/etc/inittab\", mode = \"0999\"",
        ))
        .unwrap_err();
        assert!(err.contains("provision[1].file.mode"), "{err}");
        let err = parse(&BUSYBOX.replace("shell = \"echo hi\"", "shell = \"a\"\nscript = \"b\""))
            .unwrap_err();
        assert!(err.contains("provision[2]"), "{err}");
        let err =
            parse(&BUSYBOX.replace("agent = true", "agent = true\nshell = \"a\"")).unwrap_err();
        assert!(
            err.contains("provision[3]") && err.contains("agent = true"),
            "{err}"
        );
        // `agent = false` alone is no step at all.
        let err = parse(&BUSYBOX.replace("agent = true", "agent = false")).unwrap_err();
        assert!(err.contains("provision[3]"), "{err}");
    }

    #[test]
    fn variables_expand_and_can_be_overridden() {
        let text = r#"
name = "vm"
[variables]
kernel = "kernels/vmlinux"
[source]
busybox = true
[[output]]
type = "vm"
size = "1G"
kernel = "${kernel}"
"#;
        let plan = parse(text).unwrap();
        assert!(
            matches!(&plan.outputs[0], Output::Vm { kernel, .. } if kernel == Path::new("kernels/vmlinux"))
        );
        let plan = Plan::parse(text, ".".into(), &[("kernel".into(), "/k".into())]).unwrap();
        assert!(matches!(&plan.outputs[0], Output::Vm { kernel, .. } if kernel == Path::new("/k")));
        let err = Plan::parse(text, ".".into(), &[("kernal".into(), "/k".into())]).unwrap_err();
        assert!(err.contains("kernal") && err.contains("kernel"), "{err}");
        let err = parse(&text.replace("${kernel}", "${colonel}")).unwrap_err();
        assert!(
            err.contains("output[1].kernel") && err.contains("colonel"),
            "{err}"
        );
        let err = parse(&text.replace("\"1G\"", "\"big\"")).unwrap_err();
        assert!(err.contains("output[1].size"), "{err}");
    }

    #[test]
    fn two_store_outputs_cannot_share_the_name() {
        let err = parse(&BUSYBOX.replace(
            "type = \"tarball\"\npath = \"out/busybox.tar\"",
            "type = \"container\"",
        ))
        .unwrap_err();
        assert!(err.contains("output[2]"), "{err}");
        let err = parse("name = \"x\"\n[source]\nbusybox = true\n").unwrap_err();
        assert!(err.contains("[[output]]"), "{err}");
    }
}
