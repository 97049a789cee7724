//! Host tap devices for virtio-net: open or create one by name, bring it up, attach it to a bridge.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// `SIOCBRADDIF` (linux/sockios.h): add an interface to a bridge.
const SIOCBRADDIF: libc::c_ulong = 0x89a2;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("interface name {0:?} is empty or longer than 15 bytes")]
    Name(String),
    #[error("cannot open /dev/net/tun: {0}; is the tun module loaded and are you root?")]
    OpenTun(std::io::Error),
    #[error("cannot create or attach to tap device {name}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot bring tap device {name} up")]
    Up {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot add tap device {tap} to bridge {bridge}; does the bridge exist?")]
    Bridge {
        tap: String,
        bridge: String,
        source: std::io::Error,
    },
}

/// An open tap device (no packet-information prefix, no virtio-net header: corral offers no
/// offloads, so frames are plain Ethernet).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn interface_request(name: &str) -> Result<libc::ifreq, TapError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(TapError::Name(name.to_owned()));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

fn name_of(request: &libc::ifreq) -> String {
    let bytes: Vec<u8> = request
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A socket to send interface ioctls through.
fn control_socket() -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    Ok(socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Runs an interface ioctl with `request` on a control socket.
fn interface_ioctl(request_code: libc::c_ulong, request: &mut libc::ifreq) -> std::io::Result<()> {
    let socket = control_socket()?;
    // SAFETY: every request code used here takes a `struct ifreq`, which `request` is, and
    // the kernel writes at most that struct.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), request_code as _, request as *mut _) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Tap {
    /// Opens the tap device `name`, creating it if it does not exist. A name with `%d` lets the
    /// kernel pick the number (`ctap%d` becomes `ctap0`, `ctap1`, ...).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let mut request = interface_request(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF takes a `struct ifreq`, which `request` is; the kernel writes the
        // chosen name back into it.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut request) };
        if result < 0 {
            return Err(TapError::Create {
                name: name.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Tap {
            file,
            name: name_of(&request),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Brings the interface up (on the host side), so frames flow.
    pub fn set_up(&self) -> Result<(), TapError> {
        let up = |source| TapError::Up {
            name: self.name.clone(),
            source,
        };
        let mut request = interface_request(&self.name)?;
        interface_ioctl(libc::SIOCGIFFLAGS, &mut request).map_err(up)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        interface_ioctl(libc::SIOCSIFFLAGS, &mut request).map_err(up)
    }

    /// Adds the tap to `bridge`.
    pub fn attach_to_bridge(&self, bridge: &str) -> Result<(), TapError> {
        let failed = |source| TapError::Bridge {
            tap: self.name.clone(),
            bridge: bridge.to_owned(),
            source,
        };
        let mut index_request = interface_request(&self.name)?;
        interface_ioctl(libc::SIOCGIFINDEX, &mut index_request).map_err(failed)?;
        let mut request = interface_request(bridge)?;
        // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
        request.ifr_ifru.ifru_ifindex = unsafe { index_request.ifr_ifru.ifru_ifindex };
        interface_ioctl(SIOCBRADDIF, &mut request).map_err(failed)
    }

    pub fn read_frame(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buffer)
    }

    pub fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.file.write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(interface_request("tap0").is_ok());
        assert!(matches!(interface_request(""), Err(TapError::Name(_))));
        assert!(matches!(
            interface_request("sixteen-bytes-xx"),
            Err(TapError::Name(_))
        ));
        assert_eq!(name_of(&interface_request("br-lan").unwrap()), "br-lan");
    }
}
