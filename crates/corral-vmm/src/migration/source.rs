//! The source of a live migration (pre-copy): all of guest memory sent while the guest runs,
//! then the pages it dirtied, round after round, until the rest would go within the downtime
//! limit at the measured bandwidth; then the guest paused, the last pages and the VM's state
//! sent, and the destination's "running" awaited. The caller resumes the guest on any error.

use std::time::{Duration, Instant};

use std::sync::Mutex;

use corral_control::{MigrationProgress, MigrationReport};
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryRegion};

use super::address::{Address as MigrationAddress, Connection};
use super::protocol::{self, Kind, PageBatch};
use super::MigrationError;
use crate::config::VmConfig;
use crate::devices::bus::lock;
use crate::snapshot::memory::{Pages, CHUNK};
use crate::snapshot::{file, Snapshot, SnapshotError};
use crate::vstate::memory::{self, PAGE_SIZE};
use crate::vstate::vm::{Vm, VmError};

/// A read or write to the destination that makes no progress this long fails the migration.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the destination may take to build and start the VM once it has everything.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a `migrate` request asks for.
#[derive(Clone, Debug)]
pub struct MigrateParams {
    pub to: MigrationAddress,
    pub token: String,
    pub downtime_limit: Duration,
    pub max_iterations: u32,
    pub max_time: Duration,
}

impl MigrateParams {
    pub const DEFAULT_DOWNTIME_LIMIT: Duration = Duration::from_millis(300);
    pub const DEFAULT_MAX_ITERATIONS: u32 = 30;
    pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(120);
}

/// Migrates the running VM `vm` (configured as `config`) as `params` say. `pause_and_save`
/// pauses the vCPUs and the devices' I/O threads and saves their state.
pub fn migrate(
    params: &MigrateParams,
    config: &VmConfig,
    vm: &Vm,
    progress: &Mutex<Option<MigrationProgress>>,
    pause_and_save: impl FnOnce() -> Result<Snapshot, SnapshotError>,
) -> Result<MigrationReport, MigrationError> {
    if !config.track_dirty_pages {
        return Err(MigrationError::NotTracking);
    }
    super::check_token(&params.token)?;
    let started = Instant::now();
    let mut connection =
        Connection::connect(&params.to).map_err(|source| MigrationError::Connect {
            to: params.to.clone(),
            source,
        })?;
    connection
        .set_timeout(IO_TIMEOUT)
        .map_err(protocol::ProtocolError::Io)?;
    let result = (|| {
        protocol::write(&mut connection, Kind::Hello, params.token.as_bytes())?;
        protocol::expect(&mut connection, Kind::Ready)?;
        let config_bytes = serde_json::to_vec(config).map_err(MigrationError::Encode)?;
        protocol::write(&mut connection, Kind::Config, &config_bytes)?;
        precopy(
            params,
            vm,
            &mut connection,
            started,
            progress,
            pause_and_save,
        )
    })();
    *lock(progress) = None;
    if let Err(err) = &result {
        protocol::send_error(&mut connection, &corral_host::error_chain(err));
    }
    result
}

/// The connection to the destination, timing the writes of pages: the bandwidth is what the
/// link took, not the time spent finding the pages.
struct Link<'a> {
    connection: &'a mut Connection,
    bytes: u64,
    busy: Duration,
}

impl Link<'_> {
    fn send_batch(&mut self, batch: &mut PageBatch) -> Result<(), MigrationError> {
        let bytes = (batch.len() * PAGE_SIZE) as u64;
        let start = Instant::now();
        protocol::write(self.connection, Kind::Pages, &batch.take())?;
        self.busy += start.elapsed();
        self.bytes += bytes;
        Ok(())
    }

    /// Bytes per second over all pages sent so far, never 0.
    fn bandwidth(&self) -> u64 {
        ((self.bytes as f64 / self.busy.as_secs_f64().max(1e-6)) as u64).max(1)
    }
}

fn precopy(
    params: &MigrateParams,
    vm: &Vm,
    connection: &mut Connection,
    started: Instant,
    progress: &Mutex<Option<MigrationProgress>>,
    pause_and_save: impl FnOnce() -> Result<Snapshot, SnapshotError>,
) -> Result<MigrationReport, MigrationError> {
    let mut link = Link {
        connection,
        bytes: 0,
        busy: Duration::ZERO,
    };
    // From here on, every page written is in the next round.
    memory::take_dirty_pages(&vm.fd, &vm.memory).map_err(VmError::from)?;
    send_pages(&mut link, vm, Pages::NonZero)?;
    let mut iterations = 1;
    let dirty = loop {
        let bandwidth = link.bandwidth();
        let bytes = link.bytes;
        let dirty = memory::take_dirty_pages(&vm.fd, &vm.memory).map_err(VmError::from)?;
        let remaining = dirty.count() * PAGE_SIZE as u64;
        let estimate = Duration::from_secs_f64(remaining as f64 / bandwidth as f64);
        tracing::info!(
            "migration to {}: pass {iterations} done, {bytes} bytes sent, {remaining} bytes \
             dirty, {bandwidth} bytes/s, estimated downtime {estimate:?}",
            params.to
        );
        *lock(progress) = Some(MigrationProgress {
            iterations,
            bytes,
            dirty_bytes: remaining,
            bandwidth,
            estimated_downtime_ms: millis(estimate),
        });
        if fits_in_downtime(estimate, params.downtime_limit) {
            break dirty;
        }
        if iterations >= params.max_iterations || started.elapsed() >= params.max_time {
            return Err(MigrationError::NotConverging {
                iterations,
                seconds: started.elapsed().as_secs_f64(),
                remaining,
                estimate_ms: estimate.as_millis() as u64,
                bandwidth,
                limit_ms: params.downtime_limit.as_millis() as u64,
            });
        }
        send_pages(&mut link, vm, Pages::Dirty(&dirty))?;
        iterations += 1;
    };
    let bandwidth = link.bandwidth();

    let paused = Instant::now();
    let snapshot = pause_and_save()?;
    let mut last = dirty;
    last.add(&memory::take_dirty_pages(&vm.fd, &vm.memory).map_err(VmError::from)?);
    send_pages(&mut link, vm, Pages::Dirty(&last))?;
    iterations += 1;
    let bytes = link.bytes;
    let connection = link.connection;
    let payload = serde_json::to_vec(&snapshot).map_err(SnapshotError::Encode)?;
    protocol::write(connection, Kind::State, &file::encode(&payload))?;
    connection
        .set_timeout(START_TIMEOUT)
        .map_err(protocol::ProtocolError::Io)?;
    protocol::expect(connection, Kind::Running)?;
    let report = MigrationReport {
        bytes,
        iterations,
        total_ms: millis(started.elapsed()),
        downtime_ms: millis(paused.elapsed()),
        bandwidth,
    };
    tracing::info!("migrated to {}: {report:?}", params.to);
    Ok(report)
}

/// Whether the last pass may start. Strictly below the limit, as QEMU decides it: even with no
/// page left the pause still sends the device state, so a 0 ms limit is never met.
fn fits_in_downtime(estimate: Duration, limit: Duration) -> bool {
    estimate < limit
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Sends the `pages` of guest memory.
fn send_pages(link: &mut Link<'_>, vm: &Vm, pages: Pages<'_>) -> Result<(), MigrationError> {
    let mut batch = PageBatch::default();
    let mut buffer = vec![0u8; CHUNK];
    for (index, region) in vm.memory.iter().enumerate() {
        let len = region.len();
        let mut done = 0;
        while done < len {
            let size = (len - done).min(CHUNK as u64) as usize;
            let first_page = (done / PAGE_SIZE as u64) as usize;
            if pages.may_hold_any(index, first_page, size.div_ceil(PAGE_SIZE)) {
                let address = region.start_addr().unchecked_add(done);
                let chunk = &mut buffer[..size];
                vm.memory
                    .read_slice(chunk, address)
                    .map_err(|source| MigrationError::Guest {
                        address: address.0,
                        source,
                    })?;
                for (page_index, page) in chunk.chunks(PAGE_SIZE).enumerate() {
                    if !pages.holds(index, first_page + page_index, page) {
                        continue;
                    }
                    batch.push(address.0 + (page_index * PAGE_SIZE) as u64, page);
                    if batch.is_full() {
                        link.send_batch(&mut batch)?;
                    }
                }
            }
            done += size as u64;
        }
    }
    if !batch.is_empty() {
        link.send_batch(&mut batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_limit_is_never_met_even_with_nothing_dirty() {
        assert!(!fits_in_downtime(Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn the_last_pass_starts_only_below_the_limit() {
        let limit = Duration::from_millis(300);
        assert!(fits_in_downtime(Duration::ZERO, limit));
        assert!(fits_in_downtime(Duration::from_millis(299), limit));
        assert!(!fits_in_downtime(limit, limit));
    }
}
