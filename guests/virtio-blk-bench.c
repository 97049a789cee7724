/*
 * The virtio-blk benchmark workload (bench/virtio-blk): on the first virtio-blk disk, sequential
 * writes and reads of `bench_mib=N` MiB (default 64) in 256 KiB requests, then `bench_ops=N`
 * (default 2000) random 4 KiB writes and reads inside that range; one request in flight. With
 * `bench_alloc_mib=N`, a last phase writes as many random 4 KiB blocks into the N MiB after that
 * range, which nothing has touched: on a fresh qcow2 image most of those writes allocate a cluster.
 * Each phase prints "phase NAME start" and "phase NAME done BYTES" on the console, which the host
 * timestamps. Exits 0, or 1 when a request failed.
 */
#include "common/virtio.h"

#define SECTOR VIRTIO_BLK_SECTOR
#define CHUNK (256 * 1024)
#define SMALL 4096

static u8 buffer[CHUNK] __attribute__((aligned(4096)));
static struct virtio_dev dev;

static void io(u32 type, u64 offset, u32 len)
{
	if (virtio_blk_request(&dev, type, offset / SECTOR, (u64)buffer, len,
			       type == VIRTIO_BLK_T_IN, 100000000ul) != VIRTIO_BLK_S_OK) {
		serial_puts("bench: request failed\n");
		debug_exit(1);
	}
}

static void phase(const char *name, int done, u64 bytes)
{
	serial_puts("phase ");
	serial_puts(name);
	if (done) {
		serial_puts(" done ");
		serial_put_dec(bytes);
	} else {
		serial_puts(" start");
	}
	serial_puts("\n");
}

void guest_run(const struct boot_info *boot)
{
	if (virtio_find(boot->cmdline, VIRTIO_ID_BLOCK, 0, &dev) != 0 ||
	    virtio_init(&dev, VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH, 1) != 0) {
		serial_puts("bench: no virtio-blk disk\n");
		debug_exit(1);
	}
	u64 bytes = cmdline_u64(boot->cmdline, "bench_mib=", 64) << 20;
	u64 ops = cmdline_u64(boot->cmdline, "bench_ops=", 2000);
	u64 alloc = cmdline_u64(boot->cmdline, "bench_alloc_mib=", 0) << 20;
	if (bytes + alloc > virtio_config64(&dev, 0) * SECTOR) {
		serial_puts("bench: the disk is smaller than bench_mib + bench_alloc_mib\n");
		debug_exit(1);
	}
	for (u64 i = 0; i < CHUNK; i++)
		buffer[i] = (u8)(i * 13);

	phase("seq-write", 0, 0);
	for (u64 offset = 0; offset < bytes; offset += CHUNK)
		io(VIRTIO_BLK_T_OUT, offset, CHUNK);
	io(VIRTIO_BLK_T_FLUSH, 0, 0);
	phase("seq-write", 1, bytes);

	phase("seq-read", 0, 0);
	for (u64 offset = 0; offset < bytes; offset += CHUNK)
		io(VIRTIO_BLK_T_IN, offset, CHUNK);
	phase("seq-read", 1, bytes);

	u64 seed = 12345, blocks = bytes / SMALL;
	phase("rand-write", 0, 0);
	for (u64 i = 0; i < ops; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		io(VIRTIO_BLK_T_OUT, ((seed >> 33) % blocks) * SMALL, SMALL);
	}
	io(VIRTIO_BLK_T_FLUSH, 0, 0);
	phase("rand-write", 1, ops * SMALL);

	phase("rand-read", 0, 0);
	for (u64 i = 0; i < ops; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		io(VIRTIO_BLK_T_IN, ((seed >> 33) % blocks) * SMALL, SMALL);
	}
	phase("rand-read", 1, ops * SMALL);

	if (alloc) {
		phase("rand-alloc", 0, 0);
		for (u64 i = 0; i < ops; i++) {
			seed = seed * 6364136223846793005ul + 1442695040888963407ul;
			io(VIRTIO_BLK_T_OUT, bytes + ((seed >> 33) % (alloc / SMALL)) * SMALL, SMALL);
		}
		io(VIRTIO_BLK_T_FLUSH, 0, 0);
		phase("rand-alloc", 1, ops * SMALL);
	}
	debug_exit(0);
}
