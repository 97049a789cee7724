/*
 * The virtio-blk benchmark workload (bench/virtio-blk): on the first virtio-blk disk, sequential
 * writes and reads of `bench_mib=N` MiB (default 64) in 256 KiB requests, then `bench_ops=N`
 * (default 2000) random 4 KiB writes and reads inside that range; one request in flight. Each
 * phase prints "phase NAME start" and "phase NAME done BYTES" on the console, which the host
 * timestamps. Exits 0, or 1 when a request failed.
 */
#include "common/virtio.h"

#define SECTOR 512
#define CHUNK (256 * 1024)
#define SMALL 4096
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_F_SEG_MAX (1ul << 2)
#define BLK_F_FLUSH (1ul << 9)

static struct {
	u32 type;
	u32 reserved;
	u64 sector;
} header;
static u8 status;
static u8 buffer[CHUNK] __attribute__((aligned(4096)));
static struct virtio_dev dev;

static u64 option(const char *cmdline, const char *key, u64 fallback)
{
	for (const char *s = cmdline; s && *s; s++) {
		const char *k = key, *p = s;
		while (*k && *p == *k)
			k++, p++;
		if (*k || (s != cmdline && s[-1] != ' '))
			continue;
		u64 value = 0;
		while (*p >= '0' && *p <= '9')
			value = value * 10 + (u64)(*p++ - '0');
		return value;
	}
	return fallback;
}

static void io(u32 type, u64 offset, u32 len)
{
	header.type = type;
	header.reserved = 0;
	header.sector = offset / SECTOR;
	status = 0xff;
	struct virtio_buf bufs[3] = {
		{ (u64)&header, sizeof(header), 0 },
		{ (u64)buffer, len, type == BLK_T_IN },
		{ (u64)&status, 1, 1 },
	};
	if (len)
		virtq_add(&dev, 0, bufs, 3);
	else
		virtq_add(&dev, 0, (struct virtio_buf[]){ bufs[0], bufs[2] }, 2);
	u16 head;
	u32 used;
	if (!virtq_wait(&dev, 0, &head, &used, 100000000ul) || status != 0) {
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
	    virtio_init(&dev, BLK_F_SEG_MAX | BLK_F_FLUSH, 1) != 0) {
		serial_puts("bench: no virtio-blk disk\n");
		debug_exit(1);
	}
	u64 bytes = option(boot->cmdline, "bench_mib=", 64) << 20;
	u64 ops = option(boot->cmdline, "bench_ops=", 2000);
	if (bytes > virtio_config64(&dev, 0) * SECTOR) {
		serial_puts("bench: the disk is smaller than bench_mib\n");
		debug_exit(1);
	}
	for (u64 i = 0; i < CHUNK; i++)
		buffer[i] = (u8)(i * 13);

	phase("seq-write", 0, 0);
	for (u64 offset = 0; offset < bytes; offset += CHUNK)
		io(BLK_T_OUT, offset, CHUNK);
	io(BLK_T_FLUSH, 0, 0);
	phase("seq-write", 1, bytes);

	phase("seq-read", 0, 0);
	for (u64 offset = 0; offset < bytes; offset += CHUNK)
		io(BLK_T_IN, offset, CHUNK);
	phase("seq-read", 1, bytes);

	u64 seed = 12345, blocks = bytes / SMALL;
	phase("rand-write", 0, 0);
	for (u64 i = 0; i < ops; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		io(BLK_T_OUT, ((seed >> 33) % blocks) * SMALL, SMALL);
	}
	io(BLK_T_FLUSH, 0, 0);
	phase("rand-write", 1, ops * SMALL);

	phase("rand-read", 0, 0);
	for (u64 i = 0; i < ops; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		io(BLK_T_IN, ((seed >> 33) % blocks) * SMALL, SMALL);
	}
	phase("rand-read", 1, ops * SMALL);
	debug_exit(0);
}
