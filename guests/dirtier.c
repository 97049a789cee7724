/*
 * Dirties memory without pause, for the live migration tests. Round after round it writes the
 * round number into every page of an 8 MiB buffer, first checking that each page still holds the
 * previous round's (a page lost or stale after a migration prints `bad page P` and exits with 1).
 * Every 16 rounds it prints `round N`.
 */
#include "common/guest.h"

#define PAGES 2048
#define PAGE 4096

static volatile u64 buffer[PAGES][PAGE / 8] __attribute__((aligned(PAGE)));

void guest_run(const struct boot_info *boot)
{
	(void)boot;
	for (u64 round = 1;; round++) {
		for (u64 page = 0; page < PAGES; page++) {
			if (buffer[page][0] != round - 1 || buffer[page][PAGE / 8 - 1] != round - 1) {
				serial_puts("bad page ");
				serial_put_dec(page);
				serial_puts("\n");
				debug_exit(1);
			}
			buffer[page][0] = round;
			buffer[page][PAGE / 8 - 1] = round;
		}
		if ((round & 15) == 0) {
			serial_puts("round ");
			serial_put_dec(round >> 4);
			serial_puts("\n");
		}
	}
}
