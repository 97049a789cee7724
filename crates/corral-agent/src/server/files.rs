//! `push` and `pull`: files written whole (a temp file renamed into place) or read as they are.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::frame::{self, Frame, FrameError, Stream, MAX_CHUNK};
use crate::message::{Reply, Request};

/// Receives a file. A failure while writing is reported once the host has sent all its data,
/// so the connection stays in step.
pub fn push(
    stream: &mut UnixStream,
    path: &str,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), FrameError> {
    let path = Path::new(path);
    let (mut file, temp) = match open_temp(path) {
        Ok(opened) => opened,
        Err(message) => return frame::write_message(stream, &Reply::Error { message }),
    };
    frame::write_message(stream, &Reply::Ready)?;
    let mut written: u64 = 0;
    let mut failure: Option<String> = None;
    loop {
        match frame::read_frame(stream) {
            Ok(Frame::Data(Stream::Data, bytes)) => {
                if failure.is_none() {
                    match file.write_all(&bytes) {
                        Ok(()) => written += bytes.len() as u64,
                        Err(e) => failure = Some(format!("cannot write {}: {e}", path.display())),
                    }
                }
            }
            Ok(Frame::Message(body)) if matches!(frame::parse(&body), Ok(Request::Eof)) => break,
            Ok(_) => {
                let _ = std::fs::remove_file(&temp);
                let message = "a pushed file's data must end with eof".to_string();
                return frame::write_message(stream, &Reply::Error { message });
            }
            Err(err) => {
                let _ = std::fs::remove_file(&temp);
                return Err(err);
            }
        }
    }
    let finished = match failure {
        Some(message) => Err(message),
        None => finish(file, &temp, path, mode, uid, gid),
    };
    match finished {
        Ok(()) => frame::write_message(stream, &Reply::Written { bytes: written }),
        Err(message) => {
            let _ = std::fs::remove_file(&temp);
            frame::write_message(stream, &Reply::Error { message })
        }
    }
}

/// A new private file beside `path`, so the final rename stays on one filesystem.
fn open_temp(path: &Path) -> Result<(File, PathBuf), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{} does not name a file", path.display()));
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{}.corral-push-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map(|file| (file, temp))
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))
}

fn finish(
    file: File,
    temp: &Path,
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| fail("change the owner of", e))?;
    }
    // After chown, which clears set-id bits.
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| fail("set the mode of", e))?;
    file.sync_all().map_err(|e| fail("write", e))?;
    std::fs::rename(temp, path).map_err(|e| fail("replace", e))
}

/// Sends a regular file: its size and mode, its data, then `Eof`.
pub fn pull(stream: &mut UnixStream, path: &str) -> Result<(), FrameError> {
    let opened = File::open(path).and_then(|file| {
        let meta = file.metadata()?;
        Ok((file, meta))
    });
    let (file, meta) = match opened {
        Ok((_, meta)) if !meta.is_file() => {
            let message = format!("{path} is not a regular file");
            return frame::write_message(stream, &Reply::Error { message });
        }
        Ok(opened) => opened,
        Err(e) => {
            let message = format!("cannot read {path}: {e}");
            return frame::write_message(stream, &Reply::Error { message });
        }
    };
    frame::write_message(
        stream,
        &Reply::File {
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        },
    )?;
    // Never more than announced: a file growing meanwhile is cut, a shrinking one comes short
    // and the host reports it.
    let mut reader = file.take(meta.len());
    let mut buffer = vec![0u8; MAX_CHUNK];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Coming short tells the host.
            Err(_) => break,
        };
        frame::write_data(stream, Stream::Data, &buffer[..n])?;
    }
    frame::write_message(stream, &Reply::Eof)
}
