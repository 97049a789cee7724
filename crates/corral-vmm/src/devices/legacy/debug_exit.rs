//! The debug-exit port: a guest writes one byte and the VM stops with that exit code (reason
//! `poweroff`). Test guests use it to report results; boot benchmarks use it as "guest reached
//! this point". Same port as QEMU's usual `isa-debug-exit,iobase=0xf4`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::devices::bus::BusDevice;
use crate::exit::{ExitReason, StopEvent, StopSender};

pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const DEBUG_EXIT_PORT_LEN: u64 = 4;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugExitState {
    /// Milliseconds from guest start to the first write; `None` until then.
    pub first_write_ms: Option<u64>,
}

pub struct DebugExit {
    pub state: DebugExitState,
    boot_started: Instant,
    stop: StopSender,
}

impl DebugExit {
    pub fn new(stop: StopSender) -> DebugExit {
        DebugExit {
            state: DebugExitState::default(),
            boot_started: Instant::now(),
            stop,
        }
    }

    /// Called when the guest (re)starts: times are measured from here.
    pub fn reset(&mut self) {
        self.state = DebugExitState::default();
        self.boot_started = Instant::now();
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&code) = data.first() else { return };
        if self.state.first_write_ms.is_some() {
            return;
        }
        let elapsed = self.boot_started.elapsed();
        self.state.first_write_ms = Some(elapsed.as_millis() as u64);
        tracing::info!("guest wrote {code} to the debug-exit port after {elapsed:?}");
        self.stop.send(StopEvent {
            reason: ExitReason::Poweroff,
            guest_code: Some(code),
            detail: format!("exit code {code} written to the debug-exit port after {elapsed:?}"),
        });
    }
}
