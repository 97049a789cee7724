//! A test-only port: a guest write makes the vCPU thread attempt `execve`, which no seccomp
//! filter of the VMM allows, so tests can check that a confined vCPU dies of `SIGSYS`. It exists
//! only when `corral vmm run` gets the hidden `--test-forbidden-call-port` flag; no instance or
//! control request can enable it.

use crate::devices::bus::BusDevice;

pub const FORBIDDEN_CALL_PORT: u16 = 0xf8;
pub const FORBIDDEN_CALL_PORT_LEN: u64 = 1;

pub struct ForbiddenCall;

impl BusDevice for ForbiddenCall {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {
        let path = c"/nonexistent/corral-forbidden-call";
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: a path that does not exist and NULL-terminated argument and environment
        // arrays: without a filter the call fails with ENOENT and nothing happens.
        let result = unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        tracing::warn!(
            "the forbidden-call port's execve returned {result}: this vCPU runs without a \
             seccomp filter"
        );
    }
}
