//! `corral migrate NAME ADDR`: sends a running VM instance to a `corral migrate receive` on
//! another host (or another corral root). The instance's lock is held throughout; on any
//! failure its VM goes on running here, untouched (its VMM resumes it), and the destination
//! removes what it received.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral_control::{Client, MigrationProgress, MigrationReport, Request, Response};
use corral_vmm::migration::address::Connection;
use corral_vmm::migration::protocol::ProtocolError;
use corral_vmm::migration::{check_token, Address, MigrateParams};

use super::error::{MigrateError, VmmRefusal};
use super::protocol::{self, Kind};
use super::{copied_disk, relay, MIGRATED_FILES, VMM_SOCKET};
use crate::definition::{Definition, Kind as InstanceKind};
use crate::driver::InstancePaths;
use crate::lifecycle::wait_for_exit;
use crate::state::{State, Status};
use crate::Manager;

/// How long the handshake with the destination may stay silent.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Beyond the migration's own time limit: the destination may take this long to start the VM
/// once it has all of it, and to say so.
const FINISH_SLACK: Duration = Duration::from_secs(180);
/// How long the source's VMM has to connect to its migration socket.
const VMM_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a migrated VMM may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// What `corral migrate` asks for.
#[derive(Clone, Debug)]
pub struct MigrateOptions {
    /// Where `corral migrate receive` waits.
    pub to: Address,
    pub token: String,
    /// The VMM's defaults (see [`MigrateParams`]) when absent.
    pub downtime_limit: Option<Duration>,
    pub max_iterations: Option<u32>,
    pub max_time: Option<Duration>,
    /// Copy the read-only raw disks of the instance directory along ([`copied_disk`]).
    pub copy_storage: bool,
    /// Delete the instance here once it runs there (virsh's `--undefinesource`).
    pub undefine_source: bool,
}

/// How a migration went.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Migrated {
    /// The VMM's measurements: bytes, passes, total time and the guest's downtime.
    pub report: MigrationReport,
    /// The instance here: stopped, its last exit `migrated` (absent when undefined).
    pub state: Option<State>,
}

impl Manager {
    /// Migrates the running VM instance `name` live as `options` say; `progress` hears where
    /// the VMM stands after each pass over memory.
    pub fn migrate(
        &self,
        name: &str,
        options: &MigrateOptions,
        progress: &(dyn Fn(&MigrationProgress) + Sync),
    ) -> Result<Migrated, MigrateError> {
        check_token(&options.token).map_err(MigrateError::Token)?;
        let _lock = self.lock(name)?;
        let state = self.reconciled(name)?;
        let definition = self.store().definition(name)?;
        let paths = self.paths(name)?;
        check_migratable(&definition, &state, &paths, options)?;

        let mut peer =
            Connection::connect(&options.to).map_err(|source| MigrateError::Connect {
                to: options.to.clone(),
                source,
            })?;
        peer.set_timeout(HANDSHAKE_TIMEOUT)
            .map_err(ProtocolError::Io)?;
        let vmm_token = match hand_over_definition(&mut peer, &definition, &paths, options) {
            Ok(token) => token,
            Err(err) => {
                protocol::send_error(&mut peer, &corral_host::error_chain(&err));
                return Err(err);
            }
        };
        let report = self.migrate_vmm(&paths, peer, &vmm_token, options, progress)?;

        // The VMM ends itself once migrated; its exit record says `migrated`.
        wait_for_exit(state.pid, state.pid_start_ticks, EXIT_WAIT);
        let state = self.reconciled(name)?;
        if options.undefine_source {
            self.store().remove(name)?;
            return Ok(Migrated {
                report,
                state: None,
            });
        }
        Ok(Migrated {
            report,
            state: Some(state),
        })
    }

    /// Runs the VMMs' migration through a socket in the runtime directory relayed to `peer`,
    /// and waits for the destination to say the instance runs there.
    fn migrate_vmm(
        &self,
        paths: &InstancePaths,
        peer: Connection,
        vmm_token: &str,
        options: &MigrateOptions,
        progress: &(dyn Fn(&MigrationProgress) + Sync),
    ) -> Result<MigrationReport, MigrateError> {
        let max_time = options.max_time.unwrap_or(MigrateParams::DEFAULT_MAX_TIME);
        peer.set_timeout(max_time + FINISH_SLACK)
            .map_err(ProtocolError::Io)?;
        let socket = paths.runtime_dir().join(VMM_SOCKET);
        let listener = vmm_listener(&socket)?;
        let request = Request::Migrate {
            to: Address::Unix(socket.clone()).to_string(),
            token: vmm_token.to_owned(),
            downtime_limit_ms: options.downtime_limit.map(|limit| limit.as_millis() as u64),
            max_iterations: options.max_iterations,
            max_seconds: options.max_time.map(|time| time.as_secs()),
        };
        let answered = AtomicBool::new(false);
        let (answer, relayed) = std::thread::scope(|scope| {
            let relay = scope.spawn(|| relay_source(&listener, peer, &answered));
            scope.spawn(|| watch_progress(paths, &answered, progress));
            let answer = Client::connect(&paths.control_socket(), max_time + FINISH_SLACK)
                .and_then(|mut client| client.call(&request));
            answered.store(true, Ordering::SeqCst);
            (answer, relay.join())
        });
        let _ = std::fs::remove_file(&socket);
        let relayed = relayed.unwrap_or_else(|_| {
            Err(RelayError::Protocol(ProtocolError::Refused(
                "the relay thread panicked".into(),
            )))
        });
        match answer.map_err(crate::error::CoreError::from)? {
            Response::Migrated(report) => {
                if let Err(err) = relayed {
                    // The destination's VMM confirmed it runs the VM; its corral did not say
                    // so (gone, or its connection lost): the VM runs there regardless.
                    tracing::warn!(
                        "the VM runs at {}, but its corral did not confirm it: {}",
                        options.to,
                        err
                    );
                }
                Ok(report)
            }
            Response::Error { message } => Err(match relayed {
                // The destination's own reason is the better one (e.g. a name clash).
                Err(RelayError::Protocol(err @ ProtocolError::Refused(_))) => err.into(),
                Err(RelayError::Unconnected(mut peer)) => {
                    protocol::send_error(&mut peer, &message);
                    MigrateError::Vmm(VmmRefusal(message))
                }
                _ => MigrateError::Vmm(VmmRefusal(message)),
            }),
            other => Err(MigrateError::Vmm(VmmRefusal(format!(
                "the VMM answered `migrate` with {other:?}"
            )))),
        }
    }
}

/// Refuses what cannot migrate, before anything is sent.
fn check_migratable(
    definition: &Definition,
    state: &State,
    paths: &InstancePaths,
    options: &MigrateOptions,
) -> Result<(), MigrateError> {
    let name = &definition.name;
    if definition.kind == InstanceKind::Container {
        return Err(MigrateError::Container(name.clone()));
    }
    if state.status != Status::Running {
        return Err(MigrateError::NotRunning {
            name: name.clone(),
            status: state.status.to_string(),
        });
    }
    for (index, disk) in definition.disks.iter().enumerate() {
        match (&disk.path, &disk.volume) {
            (Some(path), _) => {
                let path = paths.resolve(path);
                if !path.starts_with(&paths.dir) {
                    continue;
                }
                let disk_name = path.display().to_string();
                match (options.copy_storage, copied_disk(disk)) {
                    (true, Some(_)) => {}
                    (true, None) => {
                        return Err(MigrateError::CopyStorage {
                            name: name.clone(),
                            index,
                            disk: disk_name,
                        })
                    }
                    (false, _) => {
                        return Err(MigrateError::LocalDisk {
                            name: name.clone(),
                            index,
                            disk: disk_name,
                        })
                    }
                }
            }
            (None, Some(volume)) => {
                return Err(MigrateError::PoolVolume {
                    name: name.clone(),
                    index,
                    volume: volume.clone(),
                })
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Authenticates, sends the instance's files and definition, and returns the token of the
/// destination VMM's incoming socket.
fn hand_over_definition(
    peer: &mut Connection,
    definition: &Definition,
    paths: &InstancePaths,
    options: &MigrateOptions,
) -> Result<String, MigrateError> {
    protocol::write(peer, Kind::Hello, options.token.as_bytes())?;
    protocol::expect(peer, Kind::Ready)?;
    protocol::write(peer, Kind::Definition, definition.to_toml().as_bytes())?;
    let copied = options
        .copy_storage
        .then(|| definition.disks.iter().filter_map(copied_disk))
        .into_iter()
        .flatten()
        .map(Path::to_path_buf);
    let files = MIGRATED_FILES.iter().map(PathBuf::from).chain(copied);
    for name in files {
        let path = paths.dir.join(&name);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(crate::error::CoreError::io("read", &path)(err).into()),
        };
        protocol::send_file(peer, &name.to_string_lossy(), file, &path)?;
    }
    protocol::write(peer, Kind::FilesDone, &[])?;
    let token = protocol::expect(peer, Kind::Accepted)?;
    Ok(String::from_utf8_lossy(&token).into_owned())
}

/// The unix socket the jailed VMM connects to: owned by the jail user, for it alone.
fn vmm_listener(socket: &Path) -> Result<UnixListener, MigrateError> {
    let failed = |source| MigrateError::Socket {
        path: socket.display().to_string(),
        source,
    };
    match std::fs::remove_file(socket) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(failed(err)),
        _ => {}
    }
    let listener = UnixListener::bind(socket).map_err(failed)?;
    std::fs::set_permissions(
        socket,
        std::fs::Permissions::from_mode(corral_control::SOCKET_MODE),
    )
    .map_err(failed)?;
    let ids = corral_host::account::ensure_system_user(corral_host::account::JAIL_USER)
        .map_err(|err| failed(std::io::Error::other(corral_host::error_chain(&err))))?;
    nix::unistd::chown(
        socket,
        Some(nix::unistd::Uid::from_raw(ids.uid)),
        Some(nix::unistd::Gid::from_raw(ids.gid)),
    )
    .map_err(|errno| failed(errno.into()))?;
    listener.set_nonblocking(true).map_err(failed)?;
    Ok(listener)
}

/// Why the relay on the source side ended without the destination's "running".
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Protocol(ProtocolError),
    /// The VMM never connected (it refused the request first): the peer is handed back, so
    /// that it hears why.
    #[error("the VMM did not connect")]
    Unconnected(Connection),
}

/// Waits for the VMM on `listener` (until `answered`: it refused the request without
/// connecting), relays its stream to `peer`, and reads the destination's last word.
fn relay_source(
    listener: &UnixListener,
    peer: Connection,
    answered: &AtomicBool,
) -> Result<(), RelayError> {
    let deadline = Instant::now() + VMM_CONNECT_TIMEOUT;
    let vmm = loop {
        match listener.accept() {
            Ok((vmm, _)) => break vmm,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if answered.load(Ordering::SeqCst) || Instant::now() >= deadline {
                    return Err(RelayError::Unconnected(peer));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return Err(RelayError::Unconnected(peer)),
        }
    };
    let protocol_error = RelayError::Protocol;
    vmm.set_nonblocking(false)
        .map_err(|err| protocol_error(ProtocolError::Io(err)))?;
    let (vmm_reader, peer_writer) = match (vmm.try_clone(), peer.try_clone()) {
        (Ok(vmm_reader), Ok(peer_writer)) => (vmm_reader, peer_writer),
        (Err(err), _) | (_, Err(err)) => return Err(protocol_error(ProtocolError::Io(err))),
    };
    relay_both_ways(vmm, vmm_reader, peer, peer_writer).map_err(protocol_error)
}

fn relay_both_ways(
    vmm: UnixStream,
    vmm_reader: UnixStream,
    mut peer: Connection,
    peer_writer: Connection,
) -> Result<(), ProtocolError> {
    std::thread::scope(|scope| {
        let up = scope.spawn(|| relay::vmm_to_peer(vmm_reader, peer_writer));
        let down = relay::peer_to_vmm(&mut peer, &vmm);
        let up = up
            .join()
            .unwrap_or_else(|_| Err(ProtocolError::Refused("the relay panicked".into())));
        down?;
        up?;
        protocol::expect(&mut peer, Kind::Running).map(drop)
    })
}

/// Tells `progress` where the VMM's migration stands, once a second until `answered`.
fn watch_progress(
    paths: &InstancePaths,
    answered: &AtomicBool,
    progress: &(dyn Fn(&MigrationProgress) + Sync),
) {
    let socket: PathBuf = paths.control_socket();
    let mut last = None;
    while !answered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let info = Client::connect(&socket, Duration::from_secs(5))
            .and_then(|mut client| client.call(&Request::Info));
        if let Ok(Response::Info(info)) = info {
            if let Some(now) = info.migration {
                if last.as_ref() != Some(&now) {
                    progress(&now);
                    last = Some(now);
                }
            }
        }
    }
}
