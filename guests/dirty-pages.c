/*
 * Writes guest memory on command, for the diff snapshot tests. At start it fills every page of
 * `pages` (so that no later write sets a page-table dirty bit) and prints
 * `pages ADDR blk ADDR stack ADDR`, then `ready`. Then, for each character read on COM1:
 *   'a'..'p'  fills page c - 'a' of `pages` with c and prints `wrote c`;
 *   'r'       reads sector 0 of the first virtio-blk disk into `blk_buffer`, a page only the
 *             device writes, and prints `read SUM` (the sum of the sector's bytes).
 * Between commands the guest writes nothing but its stack: it polls the serial port.
 */
#include "common/virtio.h"

#define PAGES 16
#define PAGE 4096
#define SPINS 200000000ul

static u8 pages[PAGES][PAGE] __attribute__((aligned(PAGE)));
static u8 blk_buffer[PAGE] __attribute__((aligned(PAGE)));

static void fill(u8 *page, u8 value)
{
	for (u64 i = 0; i < PAGE; i++)
		((volatile u8 *)page)[i] = value;
}

void guest_run(const struct boot_info *boot)
{
	struct virtio_dev blk;
	int has_blk = virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, 0, &blk) == 0 && virtio_init(&blk, 0, 1) == 0;
	for (u64 n = 0; n < PAGES; n++)
		fill(pages[n], 0x11);
	u64 marker = 0;
	serial_puts("pages ");
	serial_put_hex((u64)pages);
	serial_puts(" blk ");
	serial_put_hex((u64)blk_buffer);
	serial_puts(" stack ");
	serial_put_hex((u64)&marker);
	serial_puts("\nready\n");
	for (;;) {
		char c = serial_getc();
		if (c >= 'a' && c < 'a' + PAGES) {
			fill(pages[c - 'a'], (u8)c);
			serial_puts("wrote ");
			serial_putc(c);
			serial_puts("\n");
		} else if (c == 'r' && has_blk) {
			if (virtio_blk_request(&blk, VIRTIO_BLK_T_IN, 0, (u64)blk_buffer, VIRTIO_BLK_SECTOR, 1,
					       SPINS) != VIRTIO_BLK_S_OK) {
				serial_puts("a virtio-blk read failed\n");
				debug_exit(1);
			}
			u64 sum = 0;
			for (u64 i = 0; i < VIRTIO_BLK_SECTOR; i++)
				sum += blk_buffer[i];
			serial_puts("read ");
			serial_put_dec(sum);
			serial_puts("\n");
		}
	}
}
