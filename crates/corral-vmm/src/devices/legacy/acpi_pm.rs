//! The ACPI power-management registers of the hardware-reduced model: the sleep control register
//! (the guest writes SLP_TYP | SLP_EN to enter a sleep state; S5 is power-off), the sleep status
//! register, and the reset register. The FADT and DSDT that announce them are built in
//! `arch::x86_64::acpi`. The device has no state of its own: each write acts at once.

use crate::arch::x86_64::acpi::{
    RESET_PORT, RESET_VALUE, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT,
};
use crate::devices::bus::BusDevice;
use crate::exit::{ExitReason, StopEvent, StopSender};

pub const ACPI_PM_PORT: u16 = SLEEP_CONTROL_PORT;
pub const ACPI_PM_PORT_LEN: u64 = 3;
const SLEEP_CONTROL: u64 = 0;
const RESET: u64 = (RESET_PORT - SLEEP_CONTROL_PORT) as u64;
const SLEEP_ENABLE: u8 = 1 << 5;
const SLEEP_TYPE_SHIFT: u8 = 2;
const SLEEP_TYPE_MASK: u8 = 0x7;

const _: () = assert!(SLEEP_STATUS_PORT == SLEEP_CONTROL_PORT + 1);

pub struct AcpiPm {
    stop: StopSender,
}

impl AcpiPm {
    pub fn new(stop: StopSender) -> AcpiPm {
        AcpiPm { stop }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken" (corral has no sleep states to wake from).
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            SLEEP_CONTROL if value & SLEEP_ENABLE != 0 => {
                let sleep_type = (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK;
                if sleep_type == S5_SLEEP_TYPE {
                    self.stop.send(StopEvent::new(
                        ExitReason::Poweroff,
                        "the guest entered ACPI S5 (soft off)",
                    ));
                } else {
                    tracing::info!("guest asked for ACPI sleep type {sleep_type}; ignored");
                }
            }
            RESET if value == RESET_VALUE => self.stop.send(StopEvent::new(
                ExitReason::Reboot,
                "the guest wrote the ACPI reset register",
            )),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_the_reset_register_reboots() {
        let (sender, events) = std::sync::mpsc::channel::<StopEvent>();
        let mut device = AcpiPm::new(StopSender::new(sender));
        device.write(SLEEP_CONTROL, &[3 << SLEEP_TYPE_SHIFT]); // no SLP_EN: nothing
        device.write(SLEEP_CONTROL, &[(3 << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE]); // S3: ignored
        assert!(events.try_recv().is_err());
        device.write(
            SLEEP_CONTROL,
            &[(S5_SLEEP_TYPE << SLEEP_TYPE_SHIFT) | SLEEP_ENABLE],
        );
        assert_eq!(events.try_recv().unwrap().reason, ExitReason::Poweroff);
        device.write(RESET, &[RESET_VALUE]);
        assert_eq!(events.try_recv().unwrap().reason, ExitReason::Reboot);
    }
}
