/*
 * Prints what the guest sees at the start of each virtio-blk disk: "disk N: " and the first 16
 * bytes of sector 0 in hex, then exits 0 (1 when a disk cannot be read). The host compares those
 * bytes with the image file, to learn how the VMM opened it.
 */
#include "common/virtio.h"

#define SECTOR VIRTIO_BLK_SECTOR

static u8 sector[SECTOR] __attribute__((aligned(4096)));

void guest_run(const struct boot_info *boot)
{
	static struct virtio_dev dev;
	int failed = 0;
	for (int index = 0; virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, index, &dev) == 0; index++) {
		serial_puts("disk ");
		serial_put_dec((u64)index);
		serial_puts(":");
		if (virtio_init(&dev, VIRTIO_BLK_F_SEG_MAX, 1) != 0 ||
		    virtio_blk_request(&dev, VIRTIO_BLK_T_IN, 0, (u64)sector, SECTOR, 1,
				       100000000ul) != VIRTIO_BLK_S_OK) {
			serial_puts(" unreadable\n");
			failed = 1;
			continue;
		}
		for (int i = 0; i < 16; i++) {
			static const char digits[] = "0123456789abcdef";
			serial_putc(' ');
			serial_putc(digits[sector[i] >> 4]);
			serial_putc(digits[sector[i] & 15]);
		}
		serial_puts("\n");
	}
	serial_puts("dump: done\n");
	debug_exit((u8)failed);
}
