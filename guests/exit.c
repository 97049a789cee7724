/* Exits through the debug-exit port with code 42 at once (also the boot benchmark's guest). */
#include "common/guest.h"

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	debug_exit(42);
}
