//! `corral image build SPEC.toml`, Packer-like: a tree from a source (busybox, Debian via
//! mmdebstrap, another image, an OCI image), provisioning steps run on it (files copied in,
//! shell commands in a container with the host's network), then outputs (a container or VM
//! image in the store, a rootfs tarball, an OCI image).
//!
//! Everything is made in staging directories of the image store and committed only once every
//! step and output has succeeded, so a failed build leaves the store as it was. With
//! `SOURCE_DATE_EPOCH` the result is reproducible: no mtime after it, no build timestamp.

mod log;
mod output;
mod provision;
mod source;
pub mod spec;

use std::path::{Path, PathBuf};

use corral_error::PathIoError;
use corral_image::progress::Progress;
use corral_image::store::{Image, ImageStore, StoreError};

use self::log::BuildLog;
use self::spec::{Plan, SpecError};

/// How a build is run, beyond its spec.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Aliases for the store outputs instead of the spec's `name` and `alias`es.
    pub aliases: Option<Vec<String>>,
    /// The build log; by default `ROOT/image-builds/NAME.log`.
    pub log: Option<PathBuf>,
    /// `--var NAME=VALUE`: values for the spec's `[variables]`.
    pub variables: Vec<(String, String)>,
    /// The program that runs provisioning steps with `oci run` (corral itself).
    pub runtime: PathBuf,
    /// The corral binary `agent = true` steps install; `runtime` when `None`.
    pub agent_binary: Option<PathBuf>,
    /// Copy the steps' output to stderr as well as to the log.
    pub echo: bool,
    /// `SOURCE_DATE_EPOCH`: mtimes are clamped to it and it is the images' creation time.
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid alias {0:?} (--alias)")]
    Alias(String, #[source] StoreError),
    #[error("the image build failed; its log is {log}")]
    Failed {
        log: PathBuf,
        #[source]
        source: Box<BuildError>,
    },
    #[error("provisioning step {number} failed with {status}; the log ends with:\n{tail}")]
    StepFailed {
        number: usize,
        status: String,
        tail: String,
    },
    #[error("{what} failed with {status}; the log ends with:\n{tail}")]
    CommandFailed {
        what: String,
        status: String,
        tail: String,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{0} is a directory in the image, not a file")]
    NotAFile(String),
    #[error("cannot resolve a path inside the image")]
    Resolve(#[source] corral_host::fsroot::ResolveError),
    #[error("the image store")]
    Store(#[source] StoreError),
    #[error("cannot store the image")]
    Import(#[source] corral_image::import::ImportError),
    #[error(transparent)]
    Oci(corral_image::oci::OciError),
    #[error("cannot write the rootfs tarball")]
    Pack(#[source] corral_image::archive::ArchiveError),
    #[error("cannot make the VM disk")]
    Disk(#[source] corral_disk::DiskError),
    #[error("cannot copy the root filesystem")]
    Copy(#[source] Box<crate::CoreError>),
    #[error("cannot install the guest agent")]
    Agent(#[source] corral_agent::install::InstallError),
}

impl BuildError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError {
        let path = path.to_path_buf();
        move |source| BuildError::Io(PathIoError::new(action, path, source))
    }
}

/// Checks an alias the spec gives, naming its field.
pub(crate) fn check_alias(field: &str, alias: &str) -> Result<(), String> {
    corral_image::store::validate_alias(alias).map_err(|err| format!("field `{field}`: {err}"))
}

/// What the parts of a build share.
pub(crate) struct Context<'a> {
    plan: &'a Plan,
    store: &'a ImageStore,
    log: BuildLog,
    runtime: PathBuf,
    agent_binary: PathBuf,
    source_date_epoch: Option<u64>,
    /// Distinguishes this build's step containers from another's in the same process.
    build_id: u32,
    progress: &'a dyn Progress,
}

/// Where a build's log goes unless `--log` says otherwise: beside the store, so a failed
/// build's log outlives its staging directory and leaves the store untouched.
pub fn default_log(root: &Path, name: &str) -> PathBuf {
    root.join("image-builds").join(format!("{name}.log"))
}

/// Builds the images `spec_path` describes into the store of the corral root `root`; returns
/// the stored images (the container and VM outputs).
pub fn build(
    root: &Path,
    spec_path: &Path,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Vec<Image>, BuildError> {
    let plan = Plan::load(spec_path, &options.variables)?;
    for alias in options.aliases.iter().flatten() {
        corral_image::store::validate_alias(alias)
            .map_err(|err| BuildError::Alias(alias.clone(), err))?;
    }
    let store = ImageStore::open(root).map_err(BuildError::Store)?;
    let log_path = options
        .log
        .clone()
        .unwrap_or_else(|| default_log(root, &plan.name));
    let log = BuildLog::create(&log_path, options.echo)?;
    static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut context = Context {
        plan: &plan,
        store: &store,
        log,
        runtime: options.runtime.clone(),
        agent_binary: options
            .agent_binary
            .clone()
            .unwrap_or_else(|| options.runtime.clone()),
        source_date_epoch: options.source_date_epoch,
        build_id: BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        progress,
    };
    run(&mut context, options.aliases.as_deref()).map_err(|source| BuildError::Failed {
        log: log_path,
        source: Box::new(source),
    })
}

fn run(context: &mut Context, aliases: Option<&[String]>) -> Result<Vec<Image>, BuildError> {
    let plan = context.plan;
    let staging = context.store.staging().map_err(BuildError::Store)?;
    let scratch = context.store.staging().map_err(BuildError::Store)?;
    let rootfs = staging.dir().join(corral_image::store::ROOTFS);
    context.progress.begin("preparing the source", None);
    let defaults = source::prepare(context, &plan.source, &rootfs)?;
    for (index, step) in plan.steps.iter().enumerate() {
        context
            .progress
            .begin(&format!("step {} of {}", index + 1, plan.steps.len()), None);
        provision::run(context, index + 1, step, &rootfs, scratch.dir())?;
    }
    drop(scratch);
    if let Some(epoch) = context.source_date_epoch {
        clamp_mtimes(&rootfs, epoch)?;
    }
    let images = output::produce(context, staging, defaults, aliases)?;
    context.log.note("done");
    Ok(images)
}

/// Sets every mtime after `epoch` to `epoch` (links themselves, never their targets), so the
/// tree's content alone decides its tarball and fingerprint.
pub(crate) fn clamp_mtimes(tree: &Path, epoch: u64) -> Result<(), BuildError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::MetadataExt;
    let clamp = TimeSpec::new(epoch as libc::time_t, 0);
    corral_host::tree::walk(tree, |path, meta| -> Result<(), BuildError> {
        if meta.mtime() >= 0 && (meta.mtime() as u64) < epoch {
            return Ok(());
        }
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &clamp,
            &clamp,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| BuildError::io("set the time of", path)(errno.into()))
    })
}
