//! The one grammar of a disk on a command line, shared by `corral vmm run --disk` and `corral
//! create --disk`: `PATH[,OPTION...]`, `path=PATH[,OPTION...]` or `vol=NAME[,OPTION...]`, where an
//! option is `ro` (also `readonly`, `readonly=on|true|off|false`), `format=F`, `serial=S`,
//! `target=/mnt` or `allow_backing=PATH` (repeatable). Each front end then takes the options it
//! supports and says which it does not.

use std::path::PathBuf;

/// A disk as written on a command line, before a front end checks it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: Option<PathBuf>,
    /// A storage pool volume, by name.
    pub volume: Option<String>,
    /// The image format as written (each front end knows its own set).
    pub format: Option<String>,
    pub readonly: bool,
    pub serial: Option<String>,
    /// A container's mount point.
    pub target: Option<String>,
    pub allow_backing: Vec<PathBuf>,
}

/// What is wrong with a disk on a command line; the message shows the grammar.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiskSpecError {
    #[error("disk {spec:?}: cannot understand {part:?}; {USAGE}")]
    Unknown { spec: String, part: String },
    #[error("disk {0:?} names no path or volume; {USAGE}")]
    NoSource(String),
    #[error("disk {0:?} names both a path and a volume; give one")]
    TwoSources(String),
}

/// The grammar, as the errors show it.
pub const USAGE: &str = "use PATH[,ro][,format=F][,serial=S][,target=/mnt][,allow_backing=PATH] \
                         or vol=NAME[,...]";

impl std::str::FromStr for DiskSpec {
    type Err = DiskSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut disk = DiskSpec::default();
        let unknown = |part: &str| DiskSpecError::Unknown {
            spec: spec.to_owned(),
            part: part.to_owned(),
        };
        for (index, part) in spec.split(',').enumerate() {
            match part.split_once('=') {
                None if part == "ro" || part == "readonly" => disk.readonly = true,
                None if index == 0 && !part.is_empty() => disk.path = Some(part.into()),
                Some(("readonly", value)) => {
                    disk.readonly = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(unknown(part)),
                    }
                }
                Some(("path", path)) if !path.is_empty() => disk.path = Some(path.into()),
                Some(("vol" | "volume", name)) if !name.is_empty() => {
                    disk.volume = Some(name.to_owned())
                }
                Some(("format", format)) if !format.is_empty() => {
                    disk.format = Some(format.to_owned())
                }
                Some(("serial", serial)) => disk.serial = Some(serial.to_owned()),
                Some(("target", target)) if !target.is_empty() => {
                    disk.target = Some(target.to_owned())
                }
                Some(("allow_backing", place)) if !place.is_empty() => {
                    disk.allow_backing.push(place.into())
                }
                _ => return Err(unknown(part)),
            }
        }
        match (&disk.path, &disk.volume) {
            (None, None) => Err(DiskSpecError::NoSource(spec.to_owned())),
            (Some(_), Some(_)) => Err(DiskSpecError::TwoSources(spec.to_owned())),
            _ => Ok(disk),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_read_only_and_every_option_parse() {
        for spec in [
            "a.raw,ro",
            "a.raw,readonly",
            "path=a.raw,readonly=on",
            "path=a.raw,readonly=true",
        ] {
            let disk: DiskSpec = spec.parse().unwrap();
            assert_eq!(disk.path, Some(PathBuf::from("a.raw")), "{spec}");
            assert!(disk.readonly, "{spec}");
        }
        assert!(!"a.raw,readonly=off".parse::<DiskSpec>().unwrap().readonly);
        let disk: DiskSpec =
            "vol=data,format=qcow2,serial=s1,target=/srv,allow_backing=/b1,allow_backing=/b2"
                .parse()
                .unwrap();
        assert_eq!(
            disk,
            DiskSpec {
                path: None,
                volume: Some("data".into()),
                format: Some("qcow2".into()),
                readonly: false,
                serial: Some("s1".into()),
                target: Some("/srv".into()),
                allow_backing: vec!["/b1".into(), "/b2".into()],
            }
        );
    }

    #[test]
    fn a_bad_disk_names_what_it_cannot_understand() {
        assert_eq!(
            "a.raw,rw".parse::<DiskSpec>().unwrap_err(),
            DiskSpecError::Unknown {
                spec: "a.raw,rw".into(),
                part: "rw".into()
            }
        );
        assert!(matches!(
            "a,readonly=maybe".parse::<DiskSpec>(),
            Err(DiskSpecError::Unknown { .. })
        ));
        assert_eq!(
            "format=raw".parse::<DiskSpec>().unwrap_err(),
            DiskSpecError::NoSource("format=raw".into())
        );
        assert!(matches!(
            "a.raw,vol=x".parse::<DiskSpec>(),
            Err(DiskSpecError::TwoSources(_))
        ));
        assert!("".parse::<DiskSpec>().is_err());
        let message = "a.raw,xyz=1".parse::<DiskSpec>().unwrap_err().to_string();
        assert!(
            message.contains("\"xyz=1\"") && message.contains(USAGE),
            "{message}"
        );
    }
}
