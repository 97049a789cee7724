/*
 * The guest of bench/migration: fills part of its RAM, then either idles or dirties a working
 * set at a set rate, the same way under any VMM (it paces itself on the TSC, calibrated against
 * the PIT), so corral and QEMU migrate the same load. Kernel command line:
 *   fill_mib=N   write one word into every page of N MiB from 16 MiB up (0: RAM stays zero)
 *   dirty_mib=N  the working set dirtied, from 16 MiB up (0: idle, halted for good)
 *   rate_mib=N   MiB dirtied per second, one write per 4 KiB page (0: as fast as it can)
 * It prints `tsc_hz N` and `ready` once filled, then, while dirtying, `rate N` (MiB dirtied in
 * the last second) every second.
 */
#include "common/guest.h"

#define PAGE 4096UL
#define REGION_START (16UL << 20)
#define PAGES_PER_MIB 256UL
/* A batch of pages written between two looks at the clock (the working set is whole MiB). */
#define BATCH 16UL

#define PIT_CHANNEL2 0x42
#define PIT_COMMAND 0x43
#define PIT_GATE 0x61
#define PIT_GATE_SPEAKER 0x02
#define PIT_GATE_CHANNEL2 0x01
#define PIT_HZ 1193182UL
/* 100 ms of PIT ticks: the calibration's length. */
#define CALIBRATION_TICKS (PIT_HZ / 10)

static inline u64 rdtsc(void)
{
	u32 low, high;
	__asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
	return ((u64)high << 32) | low;
}

static u16 pit_channel2_count(void)
{
	outb(PIT_COMMAND, 0x80); /* latch channel 2's count */
	u8 low = inb(PIT_CHANNEL2);
	u8 high = inb(PIT_CHANNEL2);
	return (u16)(low | (high << 8));
}

/* TSC ticks per second, against PIT channel 2 counting down 65536 ticks at a time (mode 2):
 * its count is read back (rather than its output through port 0x61, which QEMU's microvm does
 * not have) often enough to see every wrap (one per 55 ms). */
static u64 tsc_hz(void)
{
	outb(PIT_GATE, (u8)((inb(PIT_GATE) & ~PIT_GATE_SPEAKER) | PIT_GATE_CHANNEL2));
	outb(PIT_COMMAND, 0xb4); /* channel 2, low then high byte, mode 2, binary */
	outb(PIT_CHANNEL2, 0);
	outb(PIT_CHANNEL2, 0);
	u16 previous = pit_channel2_count();
	u64 start = rdtsc(), ticks = 0;
	while (ticks < CALIBRATION_TICKS) {
		u16 count = pit_channel2_count();
		ticks += (u16)(previous - count);
		previous = count;
	}
	return (rdtsc() - start) * PIT_HZ / ticks;
}

static void write_batch(u64 page, u64 stamp)
{
	volatile u64 *p = (volatile u64 *)(REGION_START + page * PAGE);
	/* Unrolled: the guest's ring 0 may run in KVM's instruction emulator, where each
	 * instruction counts. */
	p[0 * 512] = stamp, p[1 * 512] = stamp, p[2 * 512] = stamp, p[3 * 512] = stamp;
	p[4 * 512] = stamp, p[5 * 512] = stamp, p[6 * 512] = stamp, p[7 * 512] = stamp;
	p[8 * 512] = stamp, p[9 * 512] = stamp, p[10 * 512] = stamp, p[11 * 512] = stamp;
	p[12 * 512] = stamp, p[13 * 512] = stamp, p[14 * 512] = stamp, p[15 * 512] = stamp;
}

void guest_run(const struct boot_info *boot)
{
	u64 fill_pages = cmdline_u64(boot->cmdline, "fill_mib=", 0) * PAGES_PER_MIB;
	u64 dirty_pages = cmdline_u64(boot->cmdline, "dirty_mib=", 0) * PAGES_PER_MIB;
	u64 per_second = cmdline_u64(boot->cmdline, "rate_mib=", 0) * PAGES_PER_MIB;

	for (u64 page = 0; page < fill_pages; page += BATCH)
		write_batch(page, page + 1);
	u64 hz = tsc_hz();
	serial_puts("tsc_hz ");
	serial_put_dec(hz);
	serial_puts("\nready\n");
	if (dirty_pages == 0)
		halt_forever();

	/* Each second (of TSC) allows per_second pages; what a second did not write is not made
	 * up later (after a pause, the guest does not burst). */
	u64 window = rdtsc(), written = 0, next = 0, stamp = 1ULL << 32;
	for (;;) {
		u64 now = rdtsc();
		u64 elapsed = now - window;
		if (elapsed >= hz) {
			serial_puts("rate ");
			serial_put_dec(written / PAGES_PER_MIB);
			serial_puts("\n");
			window = elapsed >= 2 * hz ? now : window + hz;
			written = 0;
			continue;
		}
		if (per_second && written >= elapsed * per_second / hz)
			continue;
		write_batch(next, stamp);
		written += BATCH;
		next += BATCH;
		if (next == dirty_pages) {
			next = 0;
			stamp++;
		}
	}
}
