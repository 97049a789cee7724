//! The i8042 keyboard controller, as much of it as guests use for power control: the CPU reset
//! command (how Linux reboots without ACPI), a keyboard that answers the probe commands, and a
//! host-side Ctrl-Alt-Del key press (how the VMM asks a guest to shut down).
//!
//! vm-superio's `I8042Device` only implements the reset command (reads return 0, so there is no
//! status register and no way to send keys), hence this state machine. Everything a guest writes
//! is accepted; unknown commands are ignored like on the real chip.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use vm_superio::Trigger;

use crate::devices::bus::BusDevice;
use crate::devices::interrupt::IrqTrigger;
use crate::exit::{ExitReason, StopEvent, StopSender};

pub const I8042_PORT: u16 = 0x60;
/// Data at 0x60, status/command at 0x64 (0x61 is the PC speaker port, handled inside KVM).
pub const I8042_PORT_LEN: u64 = 5;
const DATA_OFFSET: u64 = 0;
pub const COMMAND_OFFSET: u64 = 4;

const STATUS_OUTPUT_FULL: u8 = 0x01;
const STATUS_SYSTEM: u8 = 0x04;
const STATUS_LAST_WAS_COMMAND: u8 = 0x08;

const CONTROL_KBD_INTERRUPT: u8 = 0x01;
const CONTROL_SYSTEM: u8 = 0x04;
const CONTROL_KBD_DISABLED: u8 = 0x10;
const CONTROL_AUX_DISABLED: u8 = 0x20;
const CONTROL_TRANSLATE: u8 = 0x40;

const CMD_READ_CONTROL: u8 = 0x20;
const CMD_WRITE_CONTROL: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_BUFFER: u8 = 0xd2;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const SELF_TEST_OK: u8 = 0x55;
const KBD_ACK: u8 = 0xfa;
const KBD_RESET: u8 = 0xff;
const KBD_SELF_TEST_OK: u8 = 0xaa;
const KBD_IDENTIFY: u8 = 0xf2;
/// Output port bit 0 low holds the CPU in reset.
const OUTPUT_PORT_RESET_RELEASED: u8 = 0x01;

/// The controller's output buffer holds a few bytes; a guest that never reads cannot make the VMM
/// queue more.
const OUTPUT_CAPACITY: usize = 16;

/// Ctrl, Alt, Delete pressed then released, in scancode set 1 (what the guest reads when the
/// controller translates, the PC default) and set 2.
const CTRL_ALT_DEL_SET1: &[u8] = &[0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];
const CTRL_ALT_DEL_SET2: &[u8] = &[
    0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14,
];

/// Everything the controller remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    pub control: u8,
    pub output_port: u8,
    pub last_was_command: bool,
    /// A command waiting for its data byte.
    pub pending_command: Option<u8>,
    pub output: VecDeque<u8>,
}

impl Default for I8042State {
    fn default() -> Self {
        I8042State {
            control: CONTROL_TRANSLATE | CONTROL_SYSTEM | CONTROL_KBD_INTERRUPT,
            output_port: OUTPUT_PORT_RESET_RELEASED,
            last_was_command: false,
            pending_command: None,
            output: VecDeque::new(),
        }
    }
}

pub struct I8042 {
    pub state: I8042State,
    irq: IrqTrigger,
    stop: StopSender,
}

impl I8042 {
    pub fn new(irq: IrqTrigger, stop: StopSender) -> I8042 {
        I8042 {
            state: I8042State::default(),
            irq,
            stop,
        }
    }

    pub fn reset(&mut self) {
        self.state = I8042State::default();
    }

    /// Presses and releases Ctrl-Alt-Del, the PC's "please shut down/reboot" key.
    pub fn press_ctrl_alt_del(&mut self) {
        let codes = if self.state.control & CONTROL_TRANSLATE != 0 {
            CTRL_ALT_DEL_SET1
        } else {
            CTRL_ALT_DEL_SET2
        };
        for &code in codes {
            self.push(code);
        }
    }

    fn push(&mut self, byte: u8) {
        if self.state.output.len() >= OUTPUT_CAPACITY {
            return;
        }
        self.state.output.push_back(byte);
        self.raise_interrupt();
    }

    fn raise_interrupt(&self) {
        if self.state.control & CONTROL_KBD_INTERRUPT != 0 {
            if let Err(err) = self.irq.trigger() {
                tracing::warn!("cannot raise the keyboard interrupt: {err}");
            }
        }
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM;
        if !self.state.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.state.last_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        status
    }

    fn read_data(&mut self) -> u8 {
        let byte = self.state.output.pop_front().unwrap_or(0);
        if !self.state.output.is_empty() {
            self.raise_interrupt();
        }
        byte
    }

    fn command(&mut self, command: u8) {
        self.state.last_was_command = true;
        let control = &mut self.state.control;
        match command {
            CMD_READ_CONTROL => {
                let value = *control;
                self.push(value);
            }
            CMD_WRITE_CONTROL | CMD_WRITE_OUTPUT_PORT | CMD_WRITE_KBD_BUFFER | CMD_WRITE_AUX => {
                self.state.pending_command = Some(command);
            }
            CMD_AUX_DISABLE => *control |= CONTROL_AUX_DISABLED,
            CMD_AUX_ENABLE => *control &= !CONTROL_AUX_DISABLED,
            CMD_KBD_DISABLE => *control |= CONTROL_KBD_DISABLED,
            CMD_KBD_ENABLE => *control &= !CONTROL_KBD_DISABLED,
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST | CMD_AUX_TEST => self.push(0),
            CMD_READ_OUTPUT_PORT => {
                let value = self.state.output_port;
                self.push(value);
            }
            CMD_RESET_CPU => self.request_reset("the guest sent the i8042 reset command"),
            _ => {}
        }
    }

    fn data(&mut self, value: u8) {
        self.state.last_was_command = false;
        match self.state.pending_command.take() {
            Some(CMD_WRITE_CONTROL) => self.state.control = value,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.state.output_port = value;
                if value & OUTPUT_PORT_RESET_RELEASED == 0 {
                    self.request_reset("the guest pulled the i8042 reset line");
                }
            }
            Some(CMD_WRITE_KBD_BUFFER) => self.push(value),
            Some(_) => {} // Bytes for the (absent) mouse.
            None => self.keyboard_command(value),
        }
    }

    fn keyboard_command(&mut self, value: u8) {
        self.push(KBD_ACK);
        match value {
            KBD_RESET => self.push(KBD_SELF_TEST_OK),
            KBD_IDENTIFY => {
                self.push(0xab);
                self.push(0x83);
            }
            _ => {}
        }
    }

    fn request_reset(&self, detail: &str) {
        self.stop.send(StopEvent::new(ExitReason::Reboot, detail));
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            DATA_OFFSET => self.data(value),
            COMMAND_OFFSET => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::interrupt::IrqLine;
    use std::sync::mpsc;

    fn controller() -> (I8042, mpsc::Receiver<StopEvent>) {
        let (tx, rx) = mpsc::channel();
        let line = IrqLine::new(1).unwrap();
        (I8042::new(line.trigger(), StopSender::new(tx)), rx)
    }

    fn inb(dev: &mut I8042, offset: u64) -> u8 {
        let mut data = [0u8];
        dev.read(offset, &mut data);
        data[0]
    }

    #[test]
    fn reset_command_requests_a_reboot() {
        let (mut dev, rx) = controller();
        assert_eq!(inb(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(rx.try_recv().unwrap().reason, ExitReason::Reboot);
        // Output port write with the reset bit low does the same.
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        dev.write(DATA_OFFSET, &[0xfe]);
        assert_eq!(rx.try_recv().unwrap().reason, ExitReason::Reboot);
    }

    #[test]
    fn probes_are_answered_through_the_output_buffer() {
        let (mut dev, rx) = controller();
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(inb(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(inb(&mut dev, DATA_OFFSET), SELF_TEST_OK);
        assert_eq!(inb(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CONTROL]);
        dev.write(DATA_OFFSET, &[0x61]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CONTROL]);
        assert_eq!(inb(&mut dev, DATA_OFFSET), 0x61);
        dev.write(DATA_OFFSET, &[KBD_RESET]);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_ACK);
        assert_eq!(inb(&mut dev, DATA_OFFSET), KBD_SELF_TEST_OK);
        assert!(rx.try_recv().is_err(), "no reset requested");
    }

    #[test]
    fn ctrl_alt_del_arrives_as_scancodes_and_the_buffer_is_bounded() {
        let (mut dev, _rx) = controller();
        dev.press_ctrl_alt_del();
        let codes: Vec<u8> = (0..CTRL_ALT_DEL_SET1.len())
            .map(|_| inb(&mut dev, DATA_OFFSET))
            .collect();
        assert_eq!(codes, CTRL_ALT_DEL_SET1);
        for _ in 0..10 {
            dev.press_ctrl_alt_del();
        }
        assert_eq!(dev.state.output.len(), OUTPUT_CAPACITY);
    }
}
