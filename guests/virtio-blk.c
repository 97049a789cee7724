/*
 * Drives every virtio-blk device through the virtio-mmio transport: reads the host's sector
 * pattern, asks for the serial, and on writable disks writes a second pattern, flushes, reads it
 * back, zeroes and discards ranges. Read-only disks must refuse writes. Then it submits a chain
 * pointing outside guest memory and expects the device to ask for a reset, and to work again after
 * one. Exits 0 when every check passed, 1 otherwise.
 *
 * Patterns (the host test computes the same): the host's byte at disk offset o is
 * (o / 512 * 7 + o % 512) & 0xff; the guest writes (0xff - (o / 512 + o % 256)) & 0xff.
 */
#include "common/virtio.h"

#define SECTOR VIRTIO_BLK_SECTOR
#define SPINS 2000000ul

static u8 data[16 * SECTOR] __attribute__((aligned(4096)));
static int failures;

static void check(int ok, const char *what)
{
	serial_puts(ok ? "  ok: " : "  FAILED: ");
	serial_puts(what);
	serial_puts("\n");
	if (!ok)
		failures++;
}

/* One request, waited for; returns its status, or -1 when the device never answered. */
static int request(struct virtio_dev *dev, u32 type, u64 sector, u64 data_addr, u32 data_len,
		   int device_writes)
{
	return virtio_blk_request(dev, type, sector, data_addr, data_len, device_writes, SPINS);
}

static u8 host_pattern(u64 offset)
{
	return (u8)((offset / SECTOR) * 7 + offset % SECTOR);
}

static u8 guest_pattern(u64 offset)
{
	return (u8)(0xff - (offset / SECTOR + offset % 256));
}

static int matches(u64 first_sector, u64 sectors, u8 (*pattern)(u64))
{
	for (u64 i = 0; i < sectors * SECTOR; i++) {
		u8 want = pattern ? pattern(first_sector * SECTOR + i) : 0;
		if (data[i] != want)
			return 0;
	}
	return 1;
}

static void segment(u64 sector, u32 sectors)
{
	struct {
		u64 sector;
		u32 sectors;
		u32 flags;
	} *seg = (void *)data;
	seg->sector = sector;
	seg->sectors = sectors;
	seg->flags = 0;
}

static void test_disk(struct virtio_dev *dev, int index)
{
	serial_puts("disk ");
	serial_put_dec((u64)index);
	if (virtio_init(dev, VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_DISCARD |
			     VIRTIO_BLK_F_WRITE_ZEROES, 1) != 0) {
		check(0, "initialise");
		return;
	}
	u64 capacity = virtio_config64(dev, 0);
	int read_only = (dev->features & VIRTIO_BLK_F_RO) != 0;
	serial_puts(": capacity ");
	serial_put_dec(capacity);
	serial_puts(read_only ? " sectors, read-only\n" : " sectors, writable\n");

	memset(data, 0, 20);
	check(request(dev, VIRTIO_BLK_T_GET_ID, 0, (u64)data, 20, 1) == VIRTIO_BLK_S_OK, "get-id");
	data[20] = 0;
	serial_puts("  serial: ");
	serial_puts((const char *)data);
	serial_puts("\n");

	check(request(dev, VIRTIO_BLK_T_IN, 0, (u64)data, 16 * SECTOR, 1) == VIRTIO_BLK_S_OK &&
		      matches(0, 16, host_pattern),
	      "read the host's pattern from sectors 0-15");
	check(request(dev, VIRTIO_BLK_T_IN, capacity, (u64)data, SECTOR, 1) == VIRTIO_BLK_S_IOERR,
	      "a read past the end fails");
	check(virtio_interrupt_status(dev) & 1, "used-buffer interrupt raised");

	for (u64 i = 0; i < 8 * SECTOR; i++)
		data[i] = guest_pattern(8 * SECTOR + i);
	int written = request(dev, VIRTIO_BLK_T_OUT, 8, (u64)data, 8 * SECTOR, 0);
	if (read_only) {
		check(written == VIRTIO_BLK_S_IOERR, "a write to the read-only disk fails");
		return;
	}
	check(written == VIRTIO_BLK_S_OK, "write sectors 8-15");
	check(request(dev, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0) == VIRTIO_BLK_S_OK, "flush");
	memset(data, 0, sizeof(data));
	check(request(dev, VIRTIO_BLK_T_IN, 8, (u64)data, 8 * SECTOR, 1) == VIRTIO_BLK_S_OK &&
		      matches(8, 8, guest_pattern),
	      "read back sectors 8-15");
	if (dev->features & VIRTIO_BLK_F_WRITE_ZEROES) {
		segment(16, 8);
		check(request(dev, VIRTIO_BLK_T_WRITE_ZEROES, 0, (u64)data, 16, 0) == VIRTIO_BLK_S_OK,
		      "write-zeroes sectors 16-23");
		check(request(dev, VIRTIO_BLK_T_IN, 16, (u64)data, 8 * SECTOR, 1) == VIRTIO_BLK_S_OK &&
			      matches(16, 8, 0),
		      "sectors 16-23 read as zeroes");
	}
	if (dev->features & VIRTIO_BLK_F_DISCARD) {
		segment(24, 8);
		check(request(dev, VIRTIO_BLK_T_DISCARD, 0, (u64)data, 16, 0) == VIRTIO_BLK_S_OK,
		      "discard sectors 24-31");
		check(request(dev, VIRTIO_BLK_T_IN, 24, (u64)data, 8 * SECTOR, 1) == VIRTIO_BLK_S_OK &&
			      matches(24, 8, 0),
		      "sectors 24-31 read as zeroes");
	}
	check(request(dev, VIRTIO_BLK_T_FLUSH, 0, 0, 0, 0) == VIRTIO_BLK_S_OK, "final flush");
}

/* A chain whose data buffer lies far outside guest memory: the device must not touch it and
 * must ask for a reset; after one it works again. */
static void test_bad_descriptor(struct virtio_dev *dev)
{
	serial_puts("bad descriptor\n");
	virtio_blk_submit(dev, VIRTIO_BLK_T_IN, 0, 0x7f0000000000ul, SECTOR, 1);
	u32 spins = 0;
	while (!(virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET) && spins++ < 100000)
		;
	u16 head;
	u32 len;
	check(!virtq_poll(dev, 0, &head, &len), "the bad request is not completed");
	check(virtio_status(dev) & VIRTIO_STATUS_NEEDS_RESET, "device asks for a reset");
	check(virtio_init(dev, VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH, 1) == 0, "reset and re-initialise");
	check(request(dev, VIRTIO_BLK_T_IN, 0, (u64)data, SECTOR, 1) == VIRTIO_BLK_S_OK &&
		      matches(0, 1, host_pattern),
	      "reads work after the reset");
}

void guest_run(const struct boot_info *boot)
{
	static struct virtio_dev disks[4];
	int count = 0;
	while (count < 4 && virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, count, &disks[count]) == 0)
		count++;
	serial_puts("virtio-blk devices: ");
	serial_put_dec((u64)count);
	serial_puts("\n");
	for (int i = 0; i < count; i++)
		test_disk(&disks[i], i);
	if (count > 0)
		test_bad_descriptor(&disks[0]);
	serial_puts(failures ? "virtio-blk: FAILED\n" : "virtio-blk: all checks passed\n");
	debug_exit(failures || count == 0 ? 1 : 0);
}
