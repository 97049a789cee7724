/*
 * The crash-consistency workload (corral-testkit's `crash` module describes it; the generator and
 * the sector contents here must stay identical to it): on the first virtio-blk disk, an endless
 * deterministic sequence of 4 KiB writes and discards from `crash_seed=N`, each written sector
 * naming `crash_round=N`, the operation's index and the sector. After every `crash_batch=N`
 * (default 16) operations it flushes and prints "flushed COUNT". The host kills the VMM at a
 * random instant and checks the disk. Prints "crash: ready" once the device works; exits 1 when
 * a request fails.
 */
#include "common/virtio.h"

#define SECTOR VIRTIO_BLK_SECTOR
#define BLOCK 4096
#define MAGIC 0x48535243u /* "CRSH" little-endian */

static u8 block[BLOCK] __attribute__((aligned(4096)));
static struct {
	u64 sector;
	u32 sectors;
	u32 flags;
} segment;
static struct virtio_dev dev;

static void request(u32 type, u64 sector, const void *data, u32 len)
{
	if (virtio_blk_request(&dev, type, sector, (u64)data, len, 0, 100000000ul) !=
	    VIRTIO_BLK_S_OK) {
		serial_puts("crash: request failed\n");
		debug_exit(1);
	}
}

void guest_run(const struct boot_info *boot)
{
	if (virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, 0, &dev) != 0 ||
	    virtio_init(&dev, VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_DISCARD,
			1) != 0 ||
	    !(dev.features & VIRTIO_BLK_F_DISCARD)) {
		serial_puts("crash: no writable virtio-blk disk with discard\n");
		debug_exit(1);
	}
	u32 round = (u32)cmdline_u64(boot->cmdline, "crash_round=", 0);
	u64 state = cmdline_u64(boot->cmdline, "crash_seed=", 1);
	u64 batch = cmdline_u64(boot->cmdline, "crash_batch=", 16);
	u64 blocks = virtio_config64(&dev, 0) * SECTOR / BLOCK;
	for (u64 k = 0; k < BLOCK; k++)
		block[k] = (u8)((k % SECTOR) ^ 0x5a);
	serial_puts("crash: ready\n");

	for (u32 index = 0;; index++) {
		state = state * 6364136223846793005ul + 1442695040888963407ul;
		u64 first = (state >> 33) % blocks * (BLOCK / SECTOR);
		if (((state >> 17) & 15) == 0) {
			segment.sector = first;
			segment.sectors = BLOCK / SECTOR;
			segment.flags = 0;
			request(VIRTIO_BLK_T_DISCARD, 0, &segment, sizeof(segment));
		} else {
			for (u64 i = 0; i < BLOCK / SECTOR; i++) {
				u32 *words = (u32 *)(block + i * SECTOR);
				words[0] = MAGIC;
				words[1] = round;
				words[2] = index;
				words[3] = 0;
				*(u64 *)(words + 4) = first + i;
			}
			request(VIRTIO_BLK_T_OUT, first, block, BLOCK);
		}
		if ((index + 1) % batch == 0) {
			request(VIRTIO_BLK_T_FLUSH, 0, 0, 0);
			serial_puts("flushed ");
			serial_put_dec(index + 1);
			serial_puts("\n");
		}
	}
}
