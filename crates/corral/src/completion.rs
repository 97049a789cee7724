//! Shell completion: the shell asks the binary (`COMPLETE=bash corral -- WORDS`, clap_complete's
//! dynamic completion), so subcommands, flags and the names of instances, volumes, images and
//! networks are always those of the installed corral and its root. The package ships the small
//! scripts that register this with bash, zsh and fish (`corral __generate completions DIR`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap_complete::env::{Bash, EnvCompleter, Fish, Zsh};
use clap_complete::{ArgValueCandidates, CompletionCandidate};
use corral_core::names::NameKind;

/// The environment variable that turns a run of corral into a completion request.
const COMPLETE_ENV: &str = "COMPLETE";

/// Answers a completion request and exits, when this run is one.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(crate::cli_command)
        .var(COMPLETE_ENV)
        .complete();
}

/// Candidates for an argument naming an instance.
pub fn instances() -> ArgValueCandidates {
    candidates(NameKind::Instance)
}

pub fn volumes() -> ArgValueCandidates {
    candidates(NameKind::Volume)
}

pub fn images() -> ArgValueCandidates {
    candidates(NameKind::Image)
}

pub fn networks() -> ArgValueCandidates {
    candidates(NameKind::Network)
}

fn candidates(kind: NameKind) -> ArgValueCandidates {
    ArgValueCandidates::new(move || {
        // A root corral cannot read offers nothing: completion never prints errors.
        corral_core::names::names(&completing_root(), kind)
            .unwrap_or_default()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect()
    })
}

/// The corral root the command line being completed names (`--root`), else `CORRAL_ROOT`, else
/// the default: the candidates come before clap has parsed anything.
fn completing_root() -> PathBuf {
    root_from_words(std::env::args_os().skip_while(|arg| arg != "--").skip(1))
        .or_else(|| std::env::var_os("CORRAL_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(corral_core::store::DEFAULT_ROOT))
}

fn root_from_words(words: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    let mut words = words.peekable();
    let mut root = None;
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--root" {
            root = words.next().map(PathBuf::from);
        } else if let Some(value) = word.strip_prefix("--root=") {
            root = Some(PathBuf::from(value));
        }
    }
    root
}

/// Writes the scripts registering corral's completion with bash, zsh and fish into `dir`,
/// under the names their vendor directories expect.
pub fn write_scripts(dir: &Path) -> anyhow::Result<()> {
    let shells: [(&dyn EnvCompleter, &str); 3] =
        [(&Bash, "corral"), (&Zsh, "_corral"), (&Fish, "corral.fish")];
    std::fs::create_dir_all(dir)?;
    for (shell, file) in shells {
        let mut script = Vec::new();
        // `corral` by name: the installed binary on PATH answers.
        shell.write_registration(COMPLETE_ENV, "corral", "corral", "corral", &mut script)?;
        std::fs::write(dir.join(file), script)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_of_the_command_line_being_completed_wins() {
        let words = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            root_from_words(words("corral --root /tmp/r start w").into_iter()),
            Some(PathBuf::from("/tmp/r"))
        );
        assert_eq!(
            root_from_words(words("corral start --root=/srv/c w").into_iter()),
            Some(PathBuf::from("/srv/c"))
        );
        assert_eq!(root_from_words(words("corral start w").into_iter()), None);
    }
}
