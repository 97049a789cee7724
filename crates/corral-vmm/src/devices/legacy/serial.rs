//! COM1: a 16550A UART (vm-superio's `Serial`) on port 0x3f8, IRQ 4, for the guest console.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};

use corral_control::console::ConsoleHub;
use serde::{Deserialize, Serialize};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;

use crate::devices::bus::{lock, BusDevice};
use crate::devices::interrupt::IrqTrigger;

pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_PORT_LEN: u64 = 8;

/// Where the UART's transmitted bytes go. Cloning shares the destination.
#[derive(Clone)]
pub enum SerialOutput {
    Stdout,
    File(Arc<Mutex<File>>),
    /// A console hub: an optional log plus the attached client, if any (bytes sent while none
    /// is attached reach only the log, as on a serial line with no cable).
    Hub(ConsoleHub),
    Discard,
}

impl Write for SerialOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            SerialOutput::Stdout => std::io::stdout().write(buf),
            SerialOutput::File(file) => lock(file).write(buf),
            SerialOutput::Hub(hub) => hub.write(buf),
            SerialOutput::Discard => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SerialOutput::Stdout => std::io::stdout().flush(),
            SerialOutput::File(file) => lock(file).flush(),
            SerialOutput::Hub(_) | SerialOutput::Discard => Ok(()),
        }
    }
}

/// The UART's registers and receive FIFO (vm-superio's `SerialState`, which has no serde).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Com1State {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    /// Received bytes the guest has not read yet.
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for Com1State {
    fn from(s: SerialState) -> Com1State {
        Com1State {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&Com1State> for SerialState {
    fn from(s: &Com1State) -> SerialState {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialOutput>,
    irq: IrqTrigger,
    output: SerialOutput,
    output_failed: bool,
}

impl SerialDevice {
    pub fn new(irq: IrqTrigger, output: SerialOutput) -> SerialDevice {
        SerialDevice {
            uart: Serial::new(irq.clone(), output.clone()),
            irq,
            output,
            output_failed: false,
        }
    }

    /// Back to power-on state for a guest restart; the output destination stays.
    pub fn reset(&mut self) {
        self.uart = Serial::new(self.irq.clone(), self.output.clone());
    }

    pub fn state(&self) -> Com1State {
        self.uart.state().into()
    }

    /// Takes over a saved UART; a FIFO longer than the UART's is refused.
    pub fn restore(
        &mut self,
        state: &Com1State,
    ) -> Result<(), vm_superio::serial::Error<std::io::Error>> {
        self.uart = Serial::from_state(
            &state.into(),
            self.irq.clone(),
            NoEvents,
            self.output.clone(),
        )?;
        Ok(())
    }

    /// Queues input for the guest; returns how many bytes fit in the receive FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(&bytes[..room]) {
            Ok(queued) => queued,
            Err(err) => {
                tracing::warn!("cannot queue console input for the guest: {err}");
                0
            }
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if let Err(err) = self.uart.write(offset as u8, value) {
            // Report a broken console once, not once per byte.
            if !self.output_failed {
                tracing::warn!("guest console output failed: {err}");
                self.output_failed = true;
            }
        }
    }
}

/// Feeds `bytes` to the guest, waiting while the UART's FIFO is full (the guest drains it).
pub fn feed_input(serial: &Mutex<SerialDevice>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let queued = lock(serial).enqueue_input(bytes);
        bytes = &bytes[queued..];
        if queued == 0 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}
