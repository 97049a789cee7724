//! An image's operating system (its metadata's `os` and `release`) as OVF names it: a CIM
//! OSType number (CIM_OperatingSystem's value map) that VMware and VirtualBox pick a guest type
//! from, with the name and release as its description. corral runs x86-64 guests, so the 64-bit
//! types are written.

use crate::ovf::envelope::OperatingSystem;

/// CIM OSTypes of the distributions the value map names, and of any other Linux.
const DEBIAN_64: u32 = 96;
const UBUNTU_64: u32 = 94;
const RHEL_64: u32 = 80;
const LINUX_64: u32 = 101;

/// The OVF operating system of an image whose metadata says `os` (`debian`, `ubuntu`, ...) and
/// `release`. corral's images are Linux; a name the map lacks is "Linux 64-Bit".
pub fn operating_system(os: &str, release: Option<&str>) -> OperatingSystem {
    let id = match os.to_ascii_lowercase().as_str() {
        "debian" => DEBIAN_64,
        "ubuntu" => UBUNTU_64,
        "rhel" | "redhat" | "centos" | "rocky" | "almalinux" => RHEL_64,
        _ => LINUX_64,
    };
    let description = match release {
        Some(release) => format!("{os} {release}"),
        None => os.to_string(),
    };
    OperatingSystem {
        id,
        description: Some(description),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distributions_get_their_type_and_others_linux() {
        let debian = operating_system("debian", Some("12"));
        assert_eq!(debian.id, 96);
        assert_eq!(debian.description.as_deref(), Some("debian 12"));
        assert_eq!(operating_system("Ubuntu", None).id, 94);
        assert_eq!(operating_system("alpine", Some("3.20")).id, 101);
    }
}
