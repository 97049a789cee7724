//! Network interfaces through iproute2's `ip` (JSON output where corral reads it back): the one
//! place corral changes links, so each change is a single, logged, atomic netlink request made
//! by a well-kept tool.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// Linux's limit on an interface name (IFNAMSIZ less the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot run `ip` (install iproute2)")]
    Spawn(#[source] std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot read the output of `ip {args}`")]
    Output {
        args: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0} cannot name a network namespace for `ip`: use an absolute UTF-8 path")]
    NetnsPath(PathBuf),
    #[error(
        "{0:?} is not a usable interface name: 1 to 15 letters, digits, '-', '_' or '.', \
         not starting with '-'"
    )]
    InterfaceName(String),
}

pub type Result<T, E = LinkError> = std::result::Result<T, E>;

/// A network namespace named by a file it is bind-mounted on (`unshare --net=FILE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsPath(pub PathBuf);

/// Checks an interface name the kernel accepts and `ip` cannot mistake for an option.
pub fn validate_interface_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_INTERFACE_NAME
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LinkError::InterfaceName(name.to_owned()))
    }
}

/// Runs `ip ARGS`, in `netns` when given (through `nsenter --net`, which leaves the mounts alone,
/// unlike `ip netns exec`), and returns its standard output.
pub fn ip(netns: Option<&NetnsPath>, args: &[&str]) -> Result<String> {
    let mut command = match netns {
        Some(NetnsPath(path)) => {
            let mut command = Command::new("nsenter");
            command.arg(net_option(path)).arg("ip");
            command
        }
        None => Command::new("ip"),
    };
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(LinkError::Spawn)?;
    if !output.status.success() {
        return Err(LinkError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn net_option(path: &Path) -> std::ffi::OsString {
    let mut option = std::ffi::OsString::from("--net=");
    option.push(path);
    option
}

/// One interface as `ip -j link show` reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct Link {
    pub ifname: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub operstate: Option<String>,
}

/// The interface `name`, or `None` when there is none.
pub fn find(netns: Option<&NetnsPath>, name: &str) -> Result<Option<Link>> {
    validate_interface_name(name)?;
    Ok(links(netns)?.into_iter().find(|link| link.ifname == name))
}

/// Every interface.
pub fn links(netns: Option<&NetnsPath>) -> Result<Vec<Link>> {
    let args = ["-j", "link", "show"];
    let out = ip(netns, &args)?;
    serde_json::from_str(&out).map_err(|source| LinkError::Output {
        args: args.join(" "),
        source,
    })
}

/// Creates the bridge `name` (down).
///
/// Every function here acts in `netns` when given, else in the caller's namespace.
pub fn create_bridge(netns: Option<&NetnsPath>, name: &str) -> Result<()> {
    validate_interface_name(name)?;
    ip(netns, &["link", "add", "name", name, "type", "bridge"]).map(drop)
}

/// Creates a veth pair `name` ↔ `peer`.
pub fn create_veth(netns: Option<&NetnsPath>, name: &str, peer: &str) -> Result<()> {
    validate_interface_name(name)?;
    validate_interface_name(peer)?;
    ip(
        netns,
        &[
            "link", "add", "name", name, "type", "veth", "peer", "name", peer,
        ],
    )
    .map(drop)
}

/// Deletes the interface `name` (a veth's peer goes with it).
pub fn delete(netns: Option<&NetnsPath>, name: &str) -> Result<()> {
    validate_interface_name(name)?;
    ip(netns, &["link", "delete", "dev", name]).map(drop)
}

/// Brings `name` up.
pub fn set_up(netns: Option<&NetnsPath>, name: &str) -> Result<()> {
    validate_interface_name(name)?;
    ip(netns, &["link", "set", "dev", name, "up"]).map(drop)
}

/// Makes `name` a port of `bridge`.
pub fn set_master(netns: Option<&NetnsPath>, name: &str, bridge: &str) -> Result<()> {
    validate_interface_name(name)?;
    validate_interface_name(bridge)?;
    ip(netns, &["link", "set", "dev", name, "master", bridge]).map(drop)
}

/// Sets `name`'s MAC address (`xx:xx:xx:xx:xx:xx`).
pub fn set_mac(netns: Option<&NetnsPath>, name: &str, mac: &str) -> Result<()> {
    validate_interface_name(name)?;
    ip(netns, &["link", "set", "dev", name, "address", mac]).map(drop)
}

/// Moves `name` into `target`, renamed to `new_name` there.
pub fn move_to_netns(
    netns: Option<&NetnsPath>,
    name: &str,
    target: &NetnsPath,
    new_name: &str,
) -> Result<()> {
    validate_interface_name(name)?;
    validate_interface_name(new_name)?;
    // `ip` opens a namespace argument that contains a '/' as a file (iproute2's netns_get_fd).
    let target = target
        .0
        .to_str()
        .filter(|path| path.contains('/'))
        .ok_or_else(|| LinkError::NetnsPath(target.0.clone()))?;
    ip(
        netns,
        &[
            "link", "set", "dev", name, "netns", target, "name", new_name,
        ],
    )
    .map(drop)
}

/// Adds `address/prefix_len` to `name`.
pub fn add_address(
    netns: Option<&NetnsPath>,
    name: &str,
    address: IpAddr,
    prefix_len: u8,
) -> Result<()> {
    change_address(netns, "add", name, address, prefix_len)
}

/// Gives `name` the address `address/prefix_len`, whether or not it has it already.
pub fn replace_address(
    netns: Option<&NetnsPath>,
    name: &str,
    address: IpAddr,
    prefix_len: u8,
) -> Result<()> {
    change_address(netns, "replace", name, address, prefix_len)
}

/// `ip address VERB ADDRESS/PREFIX dev NAME`.
fn change_address(
    netns: Option<&NetnsPath>,
    verb: &str,
    name: &str,
    address: IpAddr,
    prefix_len: u8,
) -> Result<()> {
    validate_interface_name(name)?;
    let cidr = format!("{address}/{prefix_len}");
    ip(netns, &["address", verb, &cidr, "dev", name]).map(drop)
}

/// Sets the default route through `gateway`.
pub fn set_default_route(netns: Option<&NetnsPath>, gateway: IpAddr) -> Result<()> {
    let gateway = gateway.to_string();
    ip(netns, &["route", "replace", "default", "via", &gateway]).map(drop)
}
