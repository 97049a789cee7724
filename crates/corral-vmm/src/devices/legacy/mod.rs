//! The PC devices every guest gets: COM1, the i8042 controller, the ACPI power-management
//! registers, and corral's debug-exit port (plus a test-only port, [`forbidden_call`]).

pub mod acpi_pm;
pub mod debug_exit;
pub mod forbidden_call;
pub mod i8042;
pub mod serial;
