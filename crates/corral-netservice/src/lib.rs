//! DHCP and DNS for one corral network.
//!
//! A network's service is dnsmasq run by a corral supervisor (`corral network-service DIR`, the
//! same model as an instance's supervisor: one process, a control socket, an exit record). Every
//! file the service uses lives in the network's state directory, which the caller chooses:
//!
//! | file | written by | what |
//! | --- | --- | --- |
//! | `service.json` | [`write_config`] | the [`ServiceConfig`] |
//! | `dnsmasq.conf` | [`write_config`] | dnsmasq's whole configuration (no other file is read) |
//! | `dhcp-hosts`, `hosts` | [`write_config`], [`set_reservations`] | reservations, re-read on SIGHUP |
//! | `lease-hook` | [`write_config`] | the script dnsmasq runs on lease changes |
//! | `leases.json`, `leases.lock` | the lease hook | the leases, replaced atomically on every change |
//! | `control.sock`, `exit.json`, `service.log` | the supervisor | control, exit record, log |
//!
//! dnsmasq never writes a file: its lease database is `leases.json`, kept by the lease hook
//! (`corral network-lease-hook`), which dnsmasq runs on every change and asks for the stored
//! leases when it starts, so a restarted service hands every client the address it had.

mod config;
mod dnsmasq;
mod error;
mod hosts;
mod leases;
mod paths;
mod render;
mod spawn;
mod supervisor;
mod user;

pub use config::{write_config, Ipv6Config, Reservation, ServiceConfig};
pub use error::Error;
pub use hosts::{reservations, set_reservations, update_reservations};
pub use leases::{leases, run_lease_hook, Lease};
pub use spawn::{is_running, remove, spawn_supervisor, stop};
pub use supervisor::run_supervisor;
