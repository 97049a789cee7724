//! debugfs, e2fsprogs' filesystem editor, driven with a command file, with guest file names
//! that cannot become commands.
//!
//! debugfs splits a command line into words with the `ss` library's rules: a word in double
//! quotes keeps its spaces and tabs, and `""` inside it is one `"`; nothing else is special
//! inside quotes. A command file is read in pieces of 8 KiB (BUFSIZ) that each run as a command,
//! a newline or carriage return ends a line, and a line starting with `!` runs a shell. So every
//! guest path is written as one quoted word, names with a newline, carriage return or NUL are
//! refused, and lines are kept far below 8 KiB; every line starts with a command of ours.
//!
//! debugfs reports a failed command on stderr and carries on, with exit status 0; so any line
//! on stderr besides its version banner fails the run.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::command::{quote, DEBUGFS};
use crate::error::{Result, SysprepError};

/// The longest command line written; far below debugfs's 8 KiB read size.
pub(crate) const MAX_LINE: usize = 4000;

/// One word of a command line.
pub(crate) enum Word<'a> {
    /// A word of ours (a command, a field name, a number).
    Plain(&'a str),
    /// A path, in the guest's filesystem or on the host.
    Path(&'a Path),
}

/// A command file being built.
pub(crate) struct Script {
    text: Vec<u8>,
    /// Host files the script reads (`write`, `ea_set -f`), removed with it.
    files: tempfile::TempDir,
    next_file: usize,
}

impl Script {
    pub fn new(scratch: &Path) -> Result<Self> {
        let files = tempfile::Builder::new()
            .prefix(".corral-sysprep-files-")
            .tempdir_in(scratch)
            .map_err(|source| SysprepError::Scratch {
                dir: scratch.to_path_buf(),
                source,
            })?;
        Ok(Script {
            text: Vec::new(),
            files,
            next_file: 0,
        })
    }

    /// Adds one command line.
    pub fn line(&mut self, words: &[Word]) -> Result<()> {
        let line = command_line(words)?;
        self.text.extend_from_slice(&line);
        self.text.push(b'\n');
        Ok(())
    }

    /// A new host file holding `content`, for a command to read.
    pub fn host_file(&mut self, content: &[u8]) -> Result<PathBuf> {
        let path = self.new_file_path();
        std::fs::write(&path, content).map_err(|source| SysprepError::Scratch {
            dir: self.files.path().to_path_buf(),
            source,
        })?;
        Ok(path)
    }

    /// A path for a host file a command will write (`ea_get -f`).
    pub fn new_file_path(&mut self) -> PathBuf {
        self.next_file += 1;
        self.files.path().join(self.next_file.to_string())
    }

    /// Runs the script against the filesystem image `image`, writable.
    pub fn run(&self, image: &Path) -> Result<()> {
        let script = self.files.path().join("script");
        std::fs::write(&script, &self.text).map_err(|source| SysprepError::Scratch {
            dir: self.files.path().to_path_buf(),
            source,
        })?;
        let output = DEBUGFS.run([
            "-w".as_ref(),
            "-f".as_ref(),
            script.as_os_str(),
            image.as_os_str(),
        ])?;
        check(&output)
    }
}

/// The words as one command line; refuses words debugfs cannot read back as written.
fn command_line(words: &[Word]) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    for word in words {
        if !line.is_empty() {
            line.push(b' ');
        }
        match word {
            Word::Plain(text) => line.extend_from_slice(text.as_bytes()),
            Word::Path(path) => quote_path(path, &mut line)?,
        }
    }
    if line.len() > MAX_LINE {
        let path = words
            .iter()
            .find_map(|w| match w {
                Word::Path(path) => Some(path.to_path_buf()),
                Word::Plain(_) => None,
            })
            .unwrap_or_default();
        return Err(SysprepError::Unnameable {
            path,
            limit: MAX_LINE,
        });
    }
    Ok(line)
}

fn quote_path(path: &Path, line: &mut Vec<u8>) -> Result<()> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
        return Err(SysprepError::Unnameable {
            path: path.to_path_buf(),
            limit: MAX_LINE,
        });
    }
    line.push(b'"');
    for &byte in bytes {
        if byte == b'"' {
            line.push(b'"');
        }
        line.push(byte);
    }
    line.push(b'"');
    Ok(())
}

/// Runs one read-only request (`debugfs -R`) and returns what it printed.
pub(crate) fn request(image: &Path, words: &[Word]) -> Result<String> {
    let line = command_line(words)?;
    let request = std::ffi::OsStr::from_bytes(&line);
    let output = DEBUGFS.run(["-R".as_ref(), request, image.as_os_str()])?;
    check(&output)?;
    Ok(output.stdout)
}

/// Fails when debugfs said anything on stderr but its banner (`debugfs 1.47.0 (5-Feb-2023)`).
fn check(output: &crate::command::Output) -> Result<()> {
    let complaints: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("debugfs "))
        .collect();
    if output.success && complaints.is_empty() {
        return Ok(());
    }
    Err(SysprepError::ProgramFailed {
        program: DEBUGFS.name,
        output: quote(&complaints.join("\n")),
    })
}

/// What `stat` says of an inode that a rewrite must carry over.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct InodeFacts {
    pub links: u64,
    /// The names of its extended attributes (inline data's `system.data` left out: it is part
    /// of how the content is stored, not an attribute).
    pub xattrs: Vec<String>,
}

/// Parses `debugfs stat` output. Attribute names are taken only when they are plainly a name
/// (`security.selinux`); anything stranger is refused rather than guessed at.
pub(crate) fn parse_stat(path: &Path, stat: &str) -> Result<InodeFacts> {
    let mut facts = InodeFacts::default();
    let mut in_xattrs = false;
    for line in stat.lines() {
        if let Some(rest) = line.split("Links: ").nth(1).filter(|_| !in_xattrs) {
            facts.links = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
        if line.starts_with("Extended attributes:") {
            in_xattrs = true;
            continue;
        }
        if !in_xattrs {
            continue;
        }
        let Some(entry) = line.strip_prefix("  ") else {
            in_xattrs = false;
            continue;
        };
        let name = entry.split(" (").next().unwrap_or_default();
        let plain = !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@:+".contains(&b));
        if !plain {
            return Err(SysprepError::UncopyableAttribute {
                path: path.to_path_buf(),
                name: name.to_string(),
            });
        }
        if name != "system.data" {
            facts.xattrs.push(name.to_string());
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[Word]) -> Result<String> {
        command_line(words).map(|l| String::from_utf8(l).unwrap())
    }

    #[test]
    fn paths_are_one_quoted_word_with_quotes_doubled() {
        assert_eq!(
            line(&[Word::Plain("rm"), Word::Path(Path::new("/tmp/a \"b\"\tc"))]).unwrap(),
            "rm \"/tmp/a \"\"b\"\"\tc\""
        );
    }

    #[test]
    fn names_that_would_end_the_line_are_refused() {
        for hostile in ["/tmp/x\nwrite /etc/shadow y", "/tmp/x\r", "/tmp/x\0y"] {
            let err = line(&[Word::Plain("rm"), Word::Path(Path::new(hostile))]).unwrap_err();
            assert!(
                matches!(err, SysprepError::Unnameable { .. }),
                "{hostile:?}"
            );
        }
        let long = format!("/tmp/{}", "a/".repeat(MAX_LINE));
        assert!(line(&[Word::Plain("rm"), Word::Path(Path::new(&long))]).is_err());
    }

    #[test]
    fn stat_gives_links_and_attribute_names() {
        let stat = "Inode: 13   Type: regular    Mode:  0644   Flags: 0x80000\n\
                    Links: 2   Blockcount: 2\n\
                    Extended attributes:\n  \
                    user.test (9) = 68 65 6c 22 6c 6f 0a 00 78 \n  \
                    security.selinux (27) = \"system_u:object_r:etc_t:s0\\000\"\n  \
                    system.data (0)\n\
                    Inode checksum: 0xbdb5d4c7\n";
        let facts = parse_stat(Path::new("/etc/x"), stat).unwrap();
        assert_eq!(
            facts,
            InodeFacts {
                links: 2,
                xattrs: vec!["user.test".into(), "security.selinux".into()],
            }
        );
        let odd = "Links: 1\nExtended attributes:\n  user.a b (1) = \"x\"\n";
        assert!(parse_stat(Path::new("/etc/x"), odd).is_err());
    }
}
