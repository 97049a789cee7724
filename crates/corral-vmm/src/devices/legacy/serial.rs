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
    /// Console input waits (in [`feed_input`]) while this is set: until the machine exists, and
    /// while its state is saved. Input queued earlier would go into a UART a restore replaces,
    /// or raise an interrupt the saved interrupt controllers miss while the UART records it as
    /// raised, after which vm-superio raises no other for received data.
    input_held: bool,
}

impl SerialDevice {
    /// A UART that holds console input until [`SerialDevice::release_input`].
    pub fn new(irq: IrqTrigger, output: SerialOutput) -> SerialDevice {
        SerialDevice {
            uart: Serial::new(irq.clone(), output.clone()),
            irq,
            output,
            output_failed: false,
            input_held: true,
        }
    }

    pub fn hold_input(&mut self) {
        self.input_held = true;
    }

    pub fn release_input(&mut self) {
        self.input_held = false;
    }

    /// Back to power-on state for a guest restart; the output destination stays.
    pub fn reset(&mut self) {
        self.uart = Serial::new(self.irq.clone(), self.output.clone());
    }

    pub fn state(&self) -> Com1State {
        self.uart.state().into()
    }

    /// Takes over a saved UART (after the vCPUs' interrupt controllers are restored); a FIFO
    /// longer than the UART's is refused. vm-superio raises again an interrupt the UART had
    /// raised: the saved interrupt controllers may have missed it, and the UART raises no other
    /// while it stays pending.
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

    /// Queues input for the guest; returns how many bytes fit in the receive FIFO (none while
    /// input is held).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 || self.input_held {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::interrupt::{IrqLine, IRQ_COM1};

    /// vm-superio's registers: interrupt enable, line status; IER bit 0 enables received-data
    /// interrupts.
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const IER_RECEIVED_DATA: u8 = 0x01;

    fn uart() -> (SerialDevice, IrqLine) {
        let line = IrqLine::new(IRQ_COM1).unwrap();
        let device = SerialDevice::new(line.trigger(), SerialOutput::Discard);
        (device, line)
    }

    #[test]
    fn input_waits_until_released_and_while_held_again() {
        let (mut serial, _line) = uart();
        assert_eq!(serial.enqueue_input(b"ab"), 0);
        serial.release_input();
        assert_eq!(serial.enqueue_input(b"ab"), 2);
        serial.hold_input();
        assert_eq!(serial.enqueue_input(b"c"), 0);
        let mut status = [0u8];
        serial.read(LSR, &mut status);
        assert_eq!(
            status[0] & 1,
            1,
            "the two bytes queued before wait for the guest"
        );
    }

    #[test]
    fn a_restored_uart_raises_again_the_interrupt_it_had_raised() {
        let (mut saved, line) = uart();
        saved.release_input();
        saved.write(IER, &[IER_RECEIVED_DATA]);
        saved.enqueue_input(b"x");
        assert_eq!(line.take_raised(), 1);
        // The guest has not read IIR: the interrupt is pending in the saved UART, and the
        // UART raises no other for more input.
        saved.enqueue_input(b"y");
        assert_eq!(line.take_raised(), 0);
        let state = saved.state();

        let (mut restored, restored_line) = uart();
        restored.restore(&state).unwrap();
        assert_eq!(restored_line.take_raised(), 1);
        assert_eq!(restored.state(), state);
    }

    #[test]
    fn a_restored_uart_with_nothing_pending_raises_nothing() {
        let (saved, _line) = uart();
        let (mut restored, restored_line) = uart();
        restored.restore(&saved.state()).unwrap();
        assert_eq!(restored_line.take_raised(), 0);
    }
}
