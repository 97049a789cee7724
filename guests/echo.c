/* Reads one line from the console and echoes it back; exits with the line's length. */
#include "common/guest.h"

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	char line[128];
	u64 len = 0;
	serial_puts("ready\n");
	for (;;) {
		char c = serial_getc();
		if (c == '\n' || c == '\r')
			break;
		if (len < sizeof(line) - 1)
			line[len++] = c;
	}
	line[len] = 0;
	serial_puts("echo: ");
	serial_puts(line);
	serial_puts("\n");
	debug_exit((u8)len);
}
