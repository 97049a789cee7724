//! Loaded kernel modules, from `/proc/modules` or, where that file is absent, `/sys/module`.

use std::collections::BTreeSet;
use std::path::Path;

/// Names of the modules the kernel reports as loaded (or built in, when read from `/sys/module`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct LoadedModules(BTreeSet<String>);

impl LoadedModules {
    /// Parses `/proc/modules`: the first word of each line is a module name.
    pub fn parse_proc_modules(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_string)
                .collect(),
        )
    }

    /// Lists the module directories under a `/sys/module`-like directory.
    pub fn from_sys_module(dir: &Path) -> Self {
        let names = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok());
        Self(names.collect())
    }

    /// Builds the set from names (tests and callers with their own source).
    pub fn from_names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self(names.into_iter().map(Into::into).collect())
    }

    /// True when `name` is loaded.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// The KVM modules among the loaded ones, in a stable order.
    pub fn kvm_modules(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(String::as_str)
            .filter(|name| *name == "kvm" || name.starts_with("kvm_"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn proc_modules_lists_first_words() {
        let modules = LoadedModules::parse_proc_modules(fixtures::MODULES_INTEL);
        assert!(modules.contains("kvm_intel"));
        assert!(modules.contains("bridge"));
        assert!(!modules.contains("kvm_amd"));
        assert_eq!(modules.kvm_modules(), vec!["kvm", "kvm_intel"]);
    }

    #[test]
    fn sys_module_directory_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["kvm", "kvm_pvm", "bridge"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let modules = LoadedModules::from_sys_module(dir.path());
        assert_eq!(modules.kvm_modules(), vec!["kvm", "kvm_pvm"]);
        assert!(modules.contains("bridge"));
    }

    #[test]
    fn missing_sys_module_is_empty() {
        let modules = LoadedModules::from_sys_module(Path::new("/nonexistent/sys/module"));
        assert!(modules.kvm_modules().is_empty());
    }
}
