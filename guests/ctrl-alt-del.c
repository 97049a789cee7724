/*
 * Waits for Ctrl-Alt-Del from the i8042 controller (polling, scancode set 1) and then powers
 * off cleanly (debug-exit code 0): what `corral vmm control ... shutdown` expects of a guest.
 */
#include "common/guest.h"

#define STATUS_OUTPUT_FULL 0x01
#define SCANCODE_DELETE 0x53

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	serial_puts("waiting for ctrl-alt-del\n");
	for (;;) {
		if (!(inb(I8042_STATUS) & STATUS_OUTPUT_FULL))
			continue;
		if (inb(I8042_DATA) == SCANCODE_DELETE)
			break;
	}
	serial_puts("ctrl-alt-del received, powering off\n");
	debug_exit(0);
}
