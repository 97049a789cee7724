//! What can go wrong reading or writing an archive; each error names the entry.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read the archive")]
    Read(#[source] std::io::Error),
    #[error("the archive is empty")]
    Empty,
    #[error("the archive's compression is not known (it starts with the bytes {magic}); corral reads plain tar, gzip, xz and zstd")]
    UnknownCompression { magic: String },
    #[error("cannot set up the {format} decompressor")]
    Decompressor {
        format: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the archive is not a valid tar stream")]
    Malformed(#[source] std::io::Error),
    #[error("the archive is truncated{}", entry_suffix(.entry))]
    Truncated { entry: Option<PathBuf> },
    #[error("an extended header (long name or PAX records) is over {max} bytes")]
    HeaderTooLarge { max: u64 },
    #[error("entry {entry} has a `..` component, which would reach outside the target")]
    PathEscape { entry: PathBuf },
    #[error("entry {entry} has a name longer than {max} bytes")]
    NameTooLong { entry: PathBuf, max: usize },
    #[error("entry {entry} goes through {through}, which is a symbolic link; corral does not follow links while unpacking")]
    ThroughSymlink { entry: PathBuf, through: PathBuf },
    #[error("entry {entry} goes through {through}, which is not a directory")]
    NotADirectory { entry: PathBuf, through: PathBuf },
    #[error("hard link {entry} points to {target}, which is not a file unpacked before it")]
    HardLinkMissing { entry: PathBuf, target: PathBuf },
    #[error("hard link {entry} points to the directory {target}")]
    HardLinkToDirectory { entry: PathBuf, target: PathBuf },
    #[error("entry {entry} is a device node or fifo outside /dev; an image may carry them only under /dev, and there they are skipped")]
    DeviceOutsideDev { entry: PathBuf },
    #[error("entry {entry} is of a kind corral does not unpack ({kind})")]
    UnsupportedEntry { entry: PathBuf, kind: String },
    #[error("entry {entry} has an invalid header field")]
    BadHeader {
        entry: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entry {entry}: {what}")]
    BadWhiteout { entry: PathBuf, what: &'static str },
    #[error("the archive has more than {max} entries (the limit max_entries)")]
    TooManyEntries { max: u64 },
    #[error("the archive's files add up to more than {max} bytes (the limit max_bytes), at entry {entry}")]
    TooManyBytes { entry: PathBuf, max: u64 },
    #[error("cannot unpack entry {entry}")]
    Unpack {
        entry: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the target directory {path}")]
    Target {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pack {path}")]
    Pack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed while it was being packed")]
    Changed { path: PathBuf },
}

fn entry_suffix(entry: &Option<PathBuf>) -> String {
    match entry {
        Some(entry) => format!(" (it ends inside entry {})", entry.display()),
        None => " (it ends inside a header)".to_string(),
    }
}
