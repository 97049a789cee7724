/* Writes to the VMM's test-only forbidden-call port (`corral vmm run
 * --test-forbidden-call-port`), which makes the vCPU thread attempt a system call its seccomp
 * filter does not allow. With the filters on the VMM dies of SIGSYS there; without them the
 * guest goes on and exits with code 7. */
#include "common/guest.h"

#define FORBIDDEN_CALL_PORT 0xf8

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	outb(FORBIDDEN_CALL_PORT, 1);
	debug_exit(7);
}
