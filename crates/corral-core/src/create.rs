//! What a new instance is made from: a [`CreateRequest`] (a definition file's text and/or
//! settings, each setting overriding the file) merged into a [`Definition`], then created, from
//! an image or with a root filesystem copied in. `corral create`'s flags and the REST API's
//! request body both become a `CreateRequest`; the rules live here once.

use std::path::PathBuf;

use corral_control::policy::Action;
use corral_control::size::MemorySize;
use corral_image::progress::Progress;
use serde::{Deserialize, Serialize};

use crate::definition::{new_uuid, Definition, Disk, Kind, UserNs};
use crate::images::CloneMode;
use crate::networks::DEFAULT_NETWORK;
use crate::nic::Nic;
use crate::{CoreError, Manager};

/// The `default_network` that joins none.
pub const NO_NETWORK: &str = "none";

/// A definition file's text and where it came from (relative paths in it are relative to it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionFile {
    pub text: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
}

/// What to create. Every field is optional; a definition file gives the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CreateRequest {
    /// The instance's name (overrides the file's).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: Option<String>,
    pub file: Option<DefinitionFile>,
    /// VM or container (`type`, as in a definition file); implied by `kernel` (a VM), `rootfs`
    /// (a container) or the image.
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
    /// An image (alias or fingerprint prefix) to create the instance from.
    pub image: Option<String>,
    /// With `image`: copy the image's disks or root filesystem instead of linking them.
    pub full: bool,
    pub cpus: Option<u8>,
    pub memory: Option<MemorySize>,
    #[schema(value_type = Option<String>)]
    pub kernel: Option<PathBuf>,
    #[schema(value_type = Option<String>)]
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    /// A directory or tar archive copied in as the container's root filesystem.
    #[schema(value_type = Option<String>)]
    pub rootfs: Option<PathBuf>,
    /// A container whose process is an init (a system container).
    pub init: bool,
    pub env: Vec<String>,
    pub hostname: Option<String>,
    /// A cloud-init user-data file.
    #[schema(value_type = Option<String>)]
    pub user_data: Option<PathBuf>,
    /// cloud-init shortcuts: a user made at first boot, its SSH public keys and password hash.
    pub user: Option<String>,
    pub ssh_keys: Vec<String>,
    pub password_hash: Option<String>,
    pub userns: Option<UserNs>,
    pub pids_limit: Option<u64>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// The network a new instance without a nic joins: absent, the `default` network (made on
    /// first use); `none`, none. Ignored with a file, which says which nics it wants.
    pub default_network: Option<String>,
    pub on_poweroff: Option<Action>,
    pub on_reboot: Option<Action>,
    pub on_crash: Option<Action>,
    pub autostart: bool,
    /// A container's command (instead of the image's or the file's).
    pub command: Vec<String>,
}

/// A request that cannot make an instance; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("give the instance a name")]
    NoName,
    #[error(
        "say what to create: an image, a kernel (or kind vm) for a VM, a root filesystem (or \
         kind container) for a container"
    )]
    NoKind,
    #[error("{0} is a container: a kernel, initrd and command line are for VMs")]
    VmSettingsOnContainer(String),
    #[error(
        "{0} is a VM: a root filesystem, init, user namespace, environment and command are for \
         containers"
    )]
    ContainerSettingsOnVm(String),
    #[error("{0} is created from an image: give no kernel, initrd or root filesystem with it")]
    ImageWithBoot(String),
    #[error("a full copy is made of an image; give the image to copy")]
    FullWithoutImage,
    #[error("a password hash is for the user cloud-init makes; give the user too")]
    PasswordWithoutUser,
}

impl CreateRequest {
    /// The name of the instance this request makes: its `name`, else its file's.
    pub fn instance_name(&self) -> Result<String, CoreError> {
        match (&self.name, &self.file) {
            (Some(name), _) => Ok(name.clone()),
            (None, Some(file)) => Ok(Definition::parse(&file.text, &file.path)?.name),
            (None, None) => Err(CreateError::NoName.into()),
        }
    }

    /// The definition this request describes (not yet stored), and the root filesystem to copy
    /// in, if any. `image_kind` is the kind of the request's image, when it has one.
    pub fn definition(
        self,
        image_kind: Option<Kind>,
    ) -> Result<(Definition, Option<PathBuf>), CoreError> {
        if self.image.is_some()
            && (self.kernel.is_some() || self.initrd.is_some() || self.rootfs.is_some())
        {
            let name = self.name.clone().unwrap_or_default();
            return Err(CreateError::ImageWithBoot(name).into());
        }
        if self.full && self.image.is_none() {
            return Err(CreateError::FullWithoutImage.into());
        }
        if self.password_hash.is_some() && self.user.is_none() {
            return Err(CreateError::PasswordWithoutUser.into());
        }
        let from_file = self.file.is_some();
        let mut definition = match &self.file {
            Some(file) => {
                let mut definition = Definition::parse(&file.text, &file.path)?;
                // A hand-written file may leave out the name (given with the request) and uuid.
                if let Some(name) = &self.name {
                    definition.name = name.clone();
                }
                if definition.uuid.is_empty() {
                    definition.uuid = new_uuid()?;
                }
                definition.validate_in(&file.path)?;
                definition
            }
            None => {
                let name = self.name.clone().ok_or(CreateError::NoName)?;
                let kind = match self.kind {
                    Some(kind) => kind,
                    None if self.kernel.is_some() => Kind::Vm,
                    None if self.rootfs.is_some() => Kind::Container,
                    None => image_kind.ok_or(CreateError::NoKind)?,
                };
                Definition::new(name, kind, new_uuid()?)
            }
        };
        if let Some(cpus) = self.cpus {
            definition.cpus = cpus;
        }
        if let Some(memory) = self.memory {
            definition.memory = memory;
        }
        for (policy, value) in [
            (&mut definition.on_poweroff, self.on_poweroff),
            (&mut definition.on_reboot, self.on_reboot),
            (&mut definition.on_crash, self.on_crash),
        ] {
            if let Some(action) = value {
                *policy = action;
            }
        }
        definition.autostart |= self.autostart;
        if let Some(pids) = self.pids_limit {
            definition.limits.pids = Some(pids);
        }
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        if let Some(boot) = definition.boot.as_mut() {
            if let Some(kernel) = self.kernel {
                boot.kernel = absolute(kernel);
            }
            if let Some(initrd) = self.initrd {
                boot.initrd = Some(absolute(initrd));
            }
            if self.cmdline.is_some() {
                boot.cmdline = self.cmdline;
            }
        } else if self.kernel.is_some() || self.initrd.is_some() || self.cmdline.is_some() {
            return Err(CreateError::VmSettingsOnContainer(definition.name).into());
        }
        let vm_hostname = self
            .hostname
            .clone()
            .filter(|_| definition.kind == Kind::Vm);
        let mut rootfs_source = None;
        if let Some(spec) = definition.container.as_mut() {
            if let Some(rootfs) = self.rootfs {
                if !rootfs.exists() {
                    return Err(CoreError::Missing {
                        what: "root filesystem",
                        path: rootfs,
                    });
                }
                rootfs_source = Some(absolute(rootfs));
                spec.rootfs = PathBuf::from("rootfs");
            }
            spec.init |= self.init;
            spec.env.extend(self.env);
            if self.hostname.is_some() {
                spec.hostname = self.hostname;
            }
            if self.userns.is_some() {
                spec.userns = self.userns;
            }
            if !self.command.is_empty() {
                spec.command = self.command;
            }
        } else if self.rootfs.is_some()
            || self.init
            || self.userns.is_some()
            || !self.env.is_empty()
            || !self.command.is_empty()
        {
            return Err(CreateError::ContainerSettingsOnVm(definition.name).into());
        }
        let shortcuts = corral_cloudinit::Shortcuts {
            user: self.user,
            ssh_keys: self.ssh_keys,
            password_hash: self.password_hash,
        };
        crate::seed::apply_create_options(
            &mut definition,
            self.user_data,
            &shortcuts,
            vm_hostname,
        )?;
        definition.disks.extend(self.disks);
        definition.nics.extend(self.nics);
        // A file says what it wants (no field: the host's ids); settings get the default for
        // new ones. From an image without a choice, the image's defaults (init) come first.
        let default_userns = definition
            .container
            .as_ref()
            .filter(|spec| spec.userns.is_none() && (from_file || image_kind.is_none()))
            .map(|_| match from_file {
                true => UserNs::Host,
                false => crate::userns::default_for(&definition),
            });
        if let (Some(spec), Some(userns)) = (definition.container.as_mut(), default_userns) {
            spec.userns = Some(userns);
        }
        // From an image, what the image fills in is checked once it has.
        if image_kind.is_none() {
            definition.validate()?;
        }
        Ok((definition, rootfs_source))
    }
}

impl Manager {
    /// Creates the instance `request` describes (see [`CreateRequest`]); returns its stored
    /// definition. Long copies (an image's disks, a root filesystem) report to `progress`.
    pub fn create_instance(
        &self,
        request: CreateRequest,
        progress: &dyn Progress,
    ) -> Result<Definition, CoreError> {
        let image = match &request.image {
            Some(reference) => Some((reference.clone(), self.images()?.resolve(reference)?)),
            None => None,
        };
        let clone = if request.full {
            CloneMode::Full
        } else {
            CloneMode::Linked
        };
        let image_kind = image
            .as_ref()
            .map(|(_, image)| crate::images::kind_of(image));
        let default_network = match (&request.file, request.default_network.as_deref()) {
            (Some(_), _) | (None, Some(NO_NETWORK)) => None,
            (None, network) => Some(network.unwrap_or(DEFAULT_NETWORK).to_owned()),
        };
        let (mut definition, rootfs_source) = request.definition(image_kind)?;
        if let (Some(network), true) = (default_network, definition.nics.is_empty()) {
            self.join_network(&mut definition, &network)?;
        }
        if let Some((reference, _)) = image {
            return self.create_from_image(definition, &reference, clone, progress);
        }
        self.create(&definition, |dir| match &rootfs_source {
            Some(source) => crate::rootfs::populate(source, &dir.join("rootfs"), progress),
            None => Ok(()),
        })?;
        Ok(self.store().definition(&definition.name)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> CreateRequest {
        CreateRequest {
            name: Some(name.to_owned()),
            ..CreateRequest::default()
        }
    }

    #[test]
    fn settings_override_the_file_and_the_kind_follows_the_kernel() {
        let file = DefinitionFile {
            text: "name = \"fromfile\"\ntype = \"vm\"\ncpus = 1\n[boot]\nkernel = \"/k\"\n".into(),
            path: PathBuf::from("/defs/vm.toml"),
        };
        let (definition, rootfs) = CreateRequest {
            name: Some("renamed".into()),
            file: Some(file),
            cpus: Some(2),
            on_reboot: Some(Action::Destroy),
            ..CreateRequest::default()
        }
        .definition(None)
        .unwrap();
        assert_eq!(definition.name, "renamed");
        assert_eq!(definition.cpus, 2);
        assert_eq!(definition.on_reboot, Action::Destroy);
        assert!(!definition.uuid.is_empty());
        assert!(rootfs.is_none());

        let (vm, _) = CreateRequest {
            kernel: Some("/boot/vmlinux".into()),
            ..request("v")
        }
        .definition(None)
        .unwrap();
        assert_eq!(vm.kind, Kind::Vm);
        assert_eq!(
            vm.boot.unwrap().kernel,
            PathBuf::from("/boot/vmlinux"),
            "the kernel setting"
        );
    }

    #[test]
    fn settings_of_the_other_kind_are_refused_with_the_reason() {
        let err = CreateRequest {
            kind: Some(Kind::Container),
            kernel: Some("/k".into()),
            ..request("c")
        }
        .definition(None)
        .unwrap_err();
        assert!(
            matches!(err, CoreError::Create(CreateError::VmSettingsOnContainer(ref n)) if n == "c"),
            "{err}"
        );
        let err = CreateRequest {
            kind: Some(Kind::Vm),
            command: vec!["sh".into()],
            ..request("v")
        }
        .definition(None)
        .unwrap_err();
        assert!(
            matches!(
                err,
                CoreError::Create(CreateError::ContainerSettingsOnVm(_))
            ),
            "{err}"
        );
        for (bad, wanted) in [
            (CreateRequest::default(), "give the instance a name"),
            (request("x"), "say what to create"),
            (
                CreateRequest {
                    full: true,
                    ..request("x")
                },
                "a full copy is made of an image",
            ),
            (
                CreateRequest {
                    image: Some("debian".into()),
                    kernel: Some("/k".into()),
                    ..request("x")
                },
                "is created from an image",
            ),
        ] {
            let err = bad.definition(None).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err} lacks {wanted:?}");
        }
    }

    #[test]
    fn the_name_comes_from_the_request_or_its_file() {
        let file = DefinitionFile {
            text: "name = \"fromfile\"\ntype = \"container\"\n[container]\nrootfs = \"r\"\n".into(),
            path: PathBuf::from("/defs/c.toml"),
        };
        let named = CreateRequest {
            file: Some(file.clone()),
            ..request("given")
        };
        assert_eq!(named.instance_name().unwrap(), "given");
        let from_file = CreateRequest {
            file: Some(file),
            ..CreateRequest::default()
        };
        assert_eq!(from_file.instance_name().unwrap(), "fromfile");
        assert!(matches!(
            CreateRequest::default().instance_name(),
            Err(CoreError::Create(CreateError::NoName))
        ));
    }

    #[test]
    fn a_missing_root_filesystem_is_named() {
        let err = CreateRequest {
            rootfs: Some("/nonexistent/rootfs".into()),
            ..request("c")
        }
        .definition(None)
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "root filesystem /nonexistent/rootfs does not exist"
        );
    }

    #[test]
    fn a_request_body_with_an_unknown_field_is_refused() {
        let err = serde_json::from_str::<CreateRequest>(r#"{"name": "a", "cpu": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpu`"), "{err}");
        let parsed: CreateRequest =
            serde_json::from_str(r#"{"name": "a", "type": "container", "memory": "256M"}"#)
                .unwrap();
        assert_eq!(parsed.kind, Some(Kind::Container));
        assert_eq!(parsed.memory, Some(MemorySize(256 << 20)));
    }
}
