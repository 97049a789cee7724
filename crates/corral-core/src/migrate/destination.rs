//! `corral migrate receive`: waits for one instance from a `corral migrate` source, makes it in
//! this corral root and runs its VM from what the source's VMM sends. On any failure nothing of
//! it is left here (its VMM ends, the instance is removed) and the source is told why, so that
//! its VM runs on there.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_host::atomic::{create_private_dir_all, write_file, PRIVATE_FILE_MODE};
use corral_vmm::migration::address::Connection;
use corral_vmm::migration::protocol::ProtocolError;
use corral_vmm::migration::{check_token, Address};

use super::error::MigrateError;
use super::protocol::{self, Kind};
use super::{relay, VMM_SOCKET};
use crate::definition::{Definition, Kind as InstanceKind};
use crate::driver::Incoming;
use crate::error::CoreError;
use crate::lifecycle::StartFrom;
use crate::state::{process_alive, process_start_ticks, State, Status};
use crate::Manager;

/// How long the source may stay silent: it sends while its guest runs, and waits at most a
/// minute for this VMM to start the VM.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the whole transfer may take, until the VMM runs the VM.
const TRANSFER_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The file, in the instance directory, that names the receiver (pid and start time) while the
/// instance is being received.
const RECEIVING_FILE: &str = "receiving";
/// The file, in the runtime directory, that gives the VMM the token of its incoming socket.
const VMM_TOKEN_FILE: &str = "migration.token";

/// What `corral migrate receive` waits for.
#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    pub listen: Address,
    pub token: String,
}

/// An instance received: its name and state here (running).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Received {
    pub name: String,
    pub state: State,
}

impl Manager {
    /// Waits at `options.listen` for one instance and runs it here. `connected` hears when
    /// a source connected and presented the right token.
    pub fn receive_migration(
        &self,
        options: &ReceiveOptions,
        connected: &dyn Fn(),
    ) -> Result<Received, MigrateError> {
        check_token(&options.token).map_err(MigrateError::Token)?;
        self.sweep_unreceived();
        let mut peer =
            Connection::accept_one(&options.listen).map_err(|source| MigrateError::Listen {
                address: options.listen.clone(),
                source,
            })?;
        peer.set_timeout(IO_TIMEOUT).map_err(ProtocolError::Io)?;
        let result = (|| {
            let definition = receive_definition(&mut peer, &options.token)?;
            connected();
            self.run_received(&mut peer, &definition)
        })();
        match result {
            Ok(state) => Ok(state),
            Err(err) => {
                protocol::send_error(&mut peer, &corral_host::error_chain(&err));
                linger(&mut peer);
                Err(err)
            }
        }
    }

    /// Removes the instances whose receiver died before their VM ran here (`corral migrate
    /// receive` killed): their VMM ended with the relay. One whose VM runs is kept (its
    /// receiver died after the VMM confirmed it); one still starting is left for later.
    pub(crate) fn sweep_unreceived(&self) {
        let Ok(names) = self.store().names() else {
            return;
        };
        for name in names {
            let marker = self.store().instance_dir(&name).join(RECEIVING_FILE);
            let Ok(text) = std::fs::read_to_string(&marker) else {
                continue;
            };
            let mut words = text.split_whitespace().map(str::parse::<u64>);
            let (Some(Ok(pid)), Some(Ok(ticks))) = (words.next(), words.next()) else {
                continue;
            };
            if process_alive(pid as u32, Some(ticks)) {
                continue;
            }
            let Ok(_lock) = self.store().lock(&name, Duration::ZERO) else {
                continue;
            };
            match self.reconciled(&name).map(|state| state.status) {
                Ok(Status::Running | Status::Paused) => {
                    let _ = std::fs::remove_file(&marker);
                }
                Ok(status) if !status.is_active() => {
                    tracing::info!("removing instance {name}: its migration was never received");
                    let _ = self.store().remove(&name);
                }
                _ => {}
            }
        }
    }

    /// Makes the instance, starts its VMM waiting for the source's, relays the VMMs' stream,
    /// and says "running" to the source; on failure removes the instance.
    fn run_received(
        &self,
        peer: &mut Connection,
        definition: &Definition,
    ) -> Result<Received, MigrateError> {
        let name = &definition.name;
        if self.store().instance_dir(name).exists() {
            return Err(MigrateError::Exists(name.clone()));
        }
        // Made whole or not at all (the files, read-only disk copies included, are received
        // into its staging directory); taken at once: nothing else knows the name yet.
        self.store()
            .create(definition, |staging| {
                // Until the VM runs here: if this process dies first, the next `corral list`
                // (or receive) removes what it left.
                let receiver = std::process::id();
                let marker = format!(
                    "{receiver} {}",
                    process_start_ticks(receiver).unwrap_or_default()
                );
                write_file(
                    &staging.join(RECEIVING_FILE),
                    marker.as_bytes(),
                    PRIVATE_FILE_MODE,
                )
                .map_err(crate::store::StoreError::from)?;
                receive_files(peer, definition, staging)
            })
            .map_err(|err| match err {
                MigrateError::Core(CoreError::Store(crate::store::StoreError::Exists(name))) => {
                    MigrateError::Exists(name)
                }
                err => err,
            })?;
        let lock = self.lock(name)?;
        let received = self.start_received(peer, name);
        if received.is_err() {
            // What a failed start left (its cgroup) went with it; the instance goes too.
            let _ = self.store().remove(name);
        }
        drop(lock);
        received
    }

    fn start_received(&self, peer: &mut Connection, name: &str) -> Result<Received, MigrateError> {
        let paths = self.paths(name)?;
        let runtime = paths.runtime_dir();
        create_private_dir_all(&runtime).map_err(CoreError::io("create", &runtime))?;
        let incoming = Incoming {
            socket: runtime.join(VMM_SOCKET),
            token_file: runtime.join(VMM_TOKEN_FILE),
            wait: TRANSFER_LIMIT,
        };
        let vmm_token = corral_host::machine_id::MachineId::generate()
            .map_err(MigrateError::VmmToken)?
            .to_string();
        write_file(
            &incoming.token_file,
            vmm_token.as_bytes(),
            PRIVATE_FILE_MODE,
        )
        .map_err(crate::store::StoreError::from)?;
        let started = std::thread::scope(|scope| {
            let start = scope.spawn(|| self.start_from(name, StartFrom::Incoming(&incoming)));
            let relayed =
                relay_destination(peer, &incoming.socket, &vmm_token, || start.is_finished());
            let started = start.join().unwrap_or_else(|_| {
                Err(CoreError::Unsupported("the start thread panicked".into()))
            });
            (started, relayed)
        });
        let _ = std::fs::remove_file(&incoming.token_file);
        let _ = std::fs::remove_file(&incoming.socket);
        match started {
            (Ok(state), Ok(())) if state.status == Status::Running => {
                // It runs here now, whatever becomes of this process.
                let marker = paths.dir.join(RECEIVING_FILE);
                std::fs::remove_file(&marker).map_err(CoreError::io("remove", &marker))?;
                protocol::write(peer, Kind::Running, &[])?;
                Ok(Received {
                    name: name.to_owned(),
                    state,
                })
            }
            (Ok(state), relayed) => {
                // Not running: the VMM ended (the source gave up, or the guest ended at once).
                let _ = self.end_run_locked(
                    name,
                    corral_control::Request::Kill,
                    Duration::from_secs(10),
                    None,
                );
                relayed?;
                Err(CoreError::StartFailed {
                    name: name.to_owned(),
                    detail: format!("its VM is {} after the migration", state.status),
                }
                .into())
            }
            (Err(err), relayed) => {
                // The source's reason, when it gave one, says more than the VMM's exit.
                relayed?;
                Err(err.into())
            }
        }
    }
}

/// Authenticates the source and receives the instance's definition.
fn receive_definition(peer: &mut Connection, token: &str) -> Result<Definition, MigrateError> {
    let hello = protocol::expect(peer, Kind::Hello)?;
    if !protocol::token_matches(&hello, token) {
        return Err(MigrateError::BadToken);
    }
    protocol::write(peer, Kind::Ready, &[])?;
    let text = protocol::expect(peer, Kind::Definition)?;
    let text = String::from_utf8_lossy(&text);
    let definition = Definition::from_toml(&text, Path::new("the migrated instance.toml"))
        .map_err(MigrateError::BadDefinition)?;
    if definition.kind != InstanceKind::Vm {
        return Err(MigrateError::Container(definition.name));
    }
    Ok(definition)
}

/// Receives the files that come with `definition` into `dir`, each piece appended to its file.
fn receive_files(
    peer: &mut Connection,
    definition: &Definition,
    dir: &Path,
) -> Result<(), MigrateError> {
    loop {
        match protocol::read(peer)? {
            (Kind::File, payload) => {
                let (name, bytes) = protocol::file_piece(&payload)?;
                if !super::may_receive(definition, &name) {
                    return Err(MigrateError::UnexpectedFile(name));
                }
                let path = dir.join(&name);
                let failed = |source| MigrateError::ReceiveFile {
                    path: path.display().to_string(),
                    source,
                };
                if let Some(parent) = path.parent() {
                    create_private_dir_all(parent).map_err(failed)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(PRIVATE_FILE_MODE)
                    .open(&path)
                    .and_then(|mut file| file.write_all(bytes))
                    .map_err(failed)?;
            }
            (Kind::FilesDone, _) => return Ok(()),
            (Kind::Error, message) => return Err(protocol::refusal(&message).into()),
            (found, _) => {
                return Err(ProtocolError::Refused(format!(
                    "sent a {found:?} message where the instance's files belong"
                ))
                .into())
            }
        }
    }
}

/// Connects to the VMM's incoming socket once it listens (unless `start_ended`: the VMM could
/// not start), tells the source to go on, and relays the VMMs' stream both ways until each
/// side has ended it.
fn relay_destination(
    peer: &mut Connection,
    socket: &Path,
    vmm_token: &str,
    start_ended: impl Fn() -> bool,
) -> Result<(), MigrateError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let vmm = loop {
        if let Ok(vmm) = UnixStream::connect(socket) {
            break vmm;
        }
        if start_ended() {
            // The start's own error says why.
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MigrateError::VmmNotListening {
                socket: socket.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    protocol::write(peer, Kind::Accepted, vmm_token.as_bytes())?;
    let io = |err| MigrateError::Protocol(ProtocolError::Io(err));
    let vmm_reader = vmm.try_clone().map_err(io)?;
    let peer_writer = peer.try_clone().map_err(io)?;
    std::thread::scope(|scope| {
        let up = scope.spawn(|| relay::vmm_to_peer(vmm_reader, peer_writer));
        let down = relay::peer_to_vmm(peer, &vmm);
        let up = up
            .join()
            .unwrap_or_else(|_| Err(ProtocolError::Refused("the relay panicked".into())));
        down?;
        up?;
        Ok(())
    })
}

/// How long a refusing receiver keeps reading what the source still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Closes a refused connection gracefully: the refusal is followed by the end of our stream,
/// and what the source still sends is read and dropped for a moment. Dropping it unread at
/// once would reset the connection, and a reset can destroy the refusal before the source
/// reads it (it then says only that the connection closed).
fn linger(peer: &mut Connection) {
    let _ = peer.shutdown_write();
    let _ = peer.set_timeout(LINGER);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 64 << 10];
    while Instant::now() < deadline && matches!(peer.read(&mut sink), Ok(1..)) {}
}
