//! Running the host programs corral edits with (e2fsprogs, ssh-keygen): found on `PATH` or in
//! the sbin directories a non-root `PATH` lacks, their output read only up to a bound (a
//! hostile filesystem can make debugfs print without end), their failure an error that quotes
//! the start of what they said.

use std::ffi::OsStr;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Result, SysprepError};

/// What a program said, up to [`OUTPUT_LIMIT`] bytes per stream.
pub(crate) struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The most kept of each output stream; the rest is read and dropped.
const OUTPUT_LIMIT: u64 = 1 << 20;
/// The most of a program's output an error message quotes.
const QUOTED: usize = 600;

/// A host program corral needs, and the Debian package that has it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Program {
    pub name: &'static str,
    pub package: &'static str,
}

pub(crate) const DEBUGFS: Program = Program {
    name: "debugfs",
    package: "e2fsprogs",
};
pub(crate) const E2FSCK: Program = Program {
    name: "e2fsck",
    package: "e2fsprogs",
};
pub(crate) const TUNE2FS: Program = Program {
    name: "tune2fs",
    package: "e2fsprogs",
};
pub(crate) const SSH_KEYGEN: Program = Program {
    name: "ssh-keygen",
    package: "openssh-client",
};

impl Program {
    /// Runs the program with `args`, stdin closed, and collects its bounded output.
    pub fn run<I, S>(self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let missing = |source| SysprepError::MissingProgram {
            program: self.name,
            package: self.package,
            source,
        };
        let mut child = Command::new(self.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(missing)?;
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || stderr.map(read_bounded).unwrap_or_default());
        let stdout = child.stdout.take().map(read_bounded).unwrap_or_default();
        let stderr = reader.join().unwrap_or_default();
        let status = child.wait().map_err(missing)?;
        Ok(Output {
            success: status.success(),
            stdout,
            stderr,
        })
    }

    /// Runs the program and fails unless it exits with success.
    pub fn run_ok<I, S>(self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = self.run(args)?;
        if !output.success {
            return Err(self.failed(&output));
        }
        Ok(output)
    }

    /// The error for a failed run, quoting what it said.
    pub fn failed(self, output: &Output) -> SysprepError {
        SysprepError::ProgramFailed {
            program: self.name,
            output: quote(&format!("{}{}", output.stderr, output.stdout)),
        }
    }

    /// Where the program is: on `PATH`, else in the sbin directories (e2fsprogs lives there and
    /// a non-root `PATH` often lacks them); the bare name when nowhere, so the spawn error says
    /// it is missing.
    fn path(self) -> PathBuf {
        corral_host::program::find(self.name).unwrap_or_else(|| PathBuf::from(self.name))
    }
}

/// Reads `stream` to its end, keeping the first [`OUTPUT_LIMIT`] bytes.
fn read_bounded(stream: impl Read) -> String {
    let mut kept = Vec::new();
    let mut stream = stream;
    let _ = (&mut stream).take(OUTPUT_LIMIT).read_to_end(&mut kept);
    // Drain the rest so the program is not blocked writing to a full pipe.
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
    String::from_utf8_lossy(&kept).into_owned()
}

/// The start of a program's output on one line, for an error message.
pub(crate) fn quote(output: &str) -> String {
    let line = output.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}
