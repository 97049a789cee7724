/* Reads entropy from the virtio-rng device twice; exits 0 when both reads filled their buffers
 * with data that is not all zeroes and not the same. */
#include "common/virtio.h"

static u8 first[32], second[32];

static u32 fill(struct virtio_dev *dev, u8 *buffer)
{
	struct virtio_buf buf = { (u64)buffer, 32, 1 };
	virtq_add(dev, 0, &buf, 1);
	u16 head;
	u32 len = 0;
	if (!virtq_wait(dev, 0, &head, &len, 2000000ul))
		return 0;
	return len;
}

void guest_run(const struct boot_info *boot)
{
	struct virtio_dev dev;
	if (virtio_find(boot->cmdline, VIRTIO_ID_RNG, 0, &dev) != 0 || virtio_init(&dev, 0, 1) != 0) {
		serial_puts("virtio-rng: no device\n");
		debug_exit(1);
	}
	u32 a = fill(&dev, first), b = fill(&dev, second);
	int zero = 1;
	for (int i = 0; i < 32; i++)
		zero &= first[i] == 0;
	serial_puts("virtio-rng: ");
	for (int i = 0; i < 8; i++)
		serial_put_hex(first[i]);
	serial_puts("\n");
	int ok = a == 32 && b == 32 && !zero && memcmp(first, second, 32) != 0;
	serial_puts(ok ? "virtio-rng: entropy ok\n" : "virtio-rng: FAILED\n");
	debug_exit(ok ? 0 : 1);
}
