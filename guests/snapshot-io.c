/*
 * Keeps virtio requests going for the snapshot tests, one line per round on COM1:
 * `round N blk SUM rng HEX`. Each round writes sector N % 8 of the first virtio-blk disk with the
 * round's pattern (byte j is ((N + j) * (j + 1)) & 0xff), reads it back and prints the sum of the bytes
 * read (the host computes the same), then reads 8 bytes from the virtio-rng device. An absent
 * device prints `-`; a request that never completes prints why and exits 1. With a virtio-vsock
 * device it keeps a buffer on the event queue and prints `vsock event ID` for each event.
 */
#include "common/virtio.h"

#define SECTOR VIRTIO_BLK_SECTOR
#define SECTORS_USED 8
#define SPINS 200000000ul

static u8 data[SECTOR] __attribute__((aligned(4096)));
static u64 entropy;
static u32 vsock_event;

static void fail(const char *what)
{
	serial_puts(what);
	serial_puts(" never completed\n");
	debug_exit(1);
}

static u64 blk_round(struct virtio_dev *dev, u64 round)
{
	u64 sector = round % SECTORS_USED;
	for (u64 j = 0; j < SECTOR; j++)
		data[j] = (u8)((round + j) * (j + 1));
	if (virtio_blk_request(dev, VIRTIO_BLK_T_OUT, sector, (u64)data, SECTOR, 0, SPINS) != VIRTIO_BLK_S_OK)
		fail("a virtio-blk write");
	memset(data, 0, SECTOR);
	if (virtio_blk_request(dev, VIRTIO_BLK_T_IN, sector, (u64)data, SECTOR, 1, SPINS) != VIRTIO_BLK_S_OK)
		fail("a virtio-blk read");
	u64 sum = 0;
	for (u64 j = 0; j < SECTOR; j++)
		sum += data[j];
	return sum;
}

static void rng_round(struct virtio_dev *dev)
{
	entropy = 0;
	struct virtio_buf buf = { (u64)&entropy, sizeof(entropy), 1 };
	virtq_add(dev, 0, &buf, 1);
	u16 head;
	u32 len;
	if (!virtq_wait(dev, 0, &head, &len, SPINS))
		fail("a virtio-rng read");
}

static void post_vsock_event_buffer(struct virtio_dev *dev)
{
	struct virtio_buf buf = { (u64)&vsock_event, sizeof(vsock_event), 1 };
	vsock_event = 0xffffffff;
	virtq_add(dev, 2, &buf, 1);
}

static void vsock_round(struct virtio_dev *dev)
{
	u16 head;
	u32 len;
	if (!virtq_poll(dev, 2, &head, &len))
		return;
	serial_puts("vsock event ");
	serial_put_dec(vsock_event);
	serial_puts("\n");
	post_vsock_event_buffer(dev);
}

void guest_run(const struct boot_info *boot)
{
	struct virtio_dev blk, rng, vsock;
	int has_blk = virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, 0, &blk) == 0 &&
		      virtio_init(&blk, VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH, 1) == 0;
	int has_rng = virtio_find(boot->cmdline, VIRTIO_ID_RNG, 0, &rng) == 0 && virtio_init(&rng, 0, 1) == 0;
	int has_vsock = virtio_find(boot->cmdline, VIRTIO_ID_VSOCK, 0, &vsock) == 0 &&
			virtio_init(&vsock, 0, 3) == 0;
	if (has_vsock)
		post_vsock_event_buffer(&vsock);
	for (u64 round = 0;; round++) {
		serial_puts("round ");
		serial_put_dec(round);
		serial_puts(" blk ");
		if (has_blk)
			serial_put_dec(blk_round(&blk, round));
		else
			serial_puts("-");
		serial_puts(" rng ");
		if (has_rng) {
			rng_round(&rng);
			serial_put_hex(entropy);
		} else {
			serial_puts("-");
		}
		serial_puts("\n");
		if (has_vsock)
			vsock_round(&vsock);
	}
}
