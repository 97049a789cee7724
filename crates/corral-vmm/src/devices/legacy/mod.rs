//! The PC devices every guest gets: COM1, the i8042 controller, and corral's debug-exit port.

pub mod debug_exit;
pub mod i8042;
pub mod serial;
