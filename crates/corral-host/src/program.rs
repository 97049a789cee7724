//! Finding the host programs corral runs (dnsmasq, e2fsprogs, cloud-init ...).

use std::path::PathBuf;

/// Where host program `name` is: on `PATH`, else in the sbin directories, which a non-root
/// `PATH` often lacks while the program lives there (dnsmasq, e2fsck).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_found_where_it_is_and_a_missing_one_is_not() {
        let found = find("sh").expect("sh is on every host");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        assert_eq!(find("corral-no-such-program"), None);
    }
}
