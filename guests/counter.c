/* Counts forever, printing the count every 2^13 steps: output stops while the VM is paused. */
#include "common/guest.h"

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	for (volatile u64 count = 0;; count++) {
		if ((count & 0x1fff) == 0) {
			serial_puts("count ");
			serial_put_dec(count >> 13);
			serial_puts("\n");
		}
	}
}
