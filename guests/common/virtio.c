/* The test guests' polling virtio-mmio driver; see virtio.h. */
#include "virtio.h"

#define REG_MAGIC 0x000
#define REG_VERSION 0x004
#define REG_DEVICE_ID 0x008
#define REG_DEVICE_FEATURES 0x010
#define REG_DEVICE_FEATURES_SEL 0x014
#define REG_DRIVER_FEATURES 0x020
#define REG_DRIVER_FEATURES_SEL 0x024
#define REG_QUEUE_SEL 0x030
#define REG_QUEUE_NUM_MAX 0x034
#define REG_QUEUE_NUM 0x038
#define REG_QUEUE_READY 0x044
#define REG_QUEUE_NOTIFY 0x050
#define REG_INTERRUPT_STATUS 0x060
#define REG_INTERRUPT_ACK 0x064
#define REG_STATUS 0x070
#define REG_QUEUE_DESC 0x080
#define REG_QUEUE_AVAIL 0x090
#define REG_QUEUE_USED 0x0a0
#define REG_CONFIG 0x100

#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define FEATURE_VERSION_1 (1ul << 32)

#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

#define MAX_DEVICES 6
/* Per queue: descriptor table, available ring and used ring, a page each. */
static u8 ring_memory[MAX_DEVICES][VIRTIO_MAX_QUEUES][3][4096] __attribute__((aligned(4096)));
static int slots_used;

#define barrier() __asm__ volatile("" ::: "memory")

static u32 reg_read(struct virtio_dev *dev, u32 offset)
{
	return *(volatile u32 *)(dev->base + offset);
}

static void reg_write(struct virtio_dev *dev, u32 offset, u32 value)
{
	*(volatile u32 *)(dev->base + offset) = value;
}

void *memset(void *dst, int value, u64 len)
{
	u8 *d = dst;
	while (len--)
		*d++ = (u8)value;
	return dst;
}

void *memcpy(void *dst, const void *src, u64 len)
{
	u8 *d = dst;
	const u8 *s = src;
	while (len--)
		*d++ = *s++;
	return dst;
}

int memcmp(const void *a, const void *b, u64 len)
{
	const u8 *x = a, *y = b;
	for (u64 i = 0; i < len; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static u64 parse_number(const char **s)
{
	u64 value = 0;
	int base = 10;
	if ((*s)[0] == '0' && (*s)[1] == 'x') {
		base = 16;
		*s += 2;
	}
	for (;;) {
		char c = **s;
		u64 digit;
		if (c >= '0' && c <= '9')
			digit = (u64)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			digit = (u64)(c - 'a' + 10);
		else
			return value;
		value = value * (u64)base + digit;
		(*s)++;
	}
}

int virtio_find(const char *cmdline, u32 device_id, int nth, struct virtio_dev *dev)
{
	static const char key[] = "virtio_mmio.device=";
	if (!cmdline)
		return -1;
	for (const char *s = cmdline; *s; s++) {
		if ((s != cmdline && s[-1] != ' ') || !starts_with(s, key))
			continue;
		/* SIZE@BASE:IRQ; the size is corral's "4K" or QEMU's "512". */
		const char *p = s + sizeof(key) - 1;
		while (*p && *p != '@' && *p != ' ')
			p++;
		if (*p++ != '@')
			continue;
		u64 base = parse_number(&p);
		if (*p++ != ':')
			continue;
		u64 irq = parse_number(&p);
		dev->base = base;
		if (reg_read(dev, REG_MAGIC) != 0x74726976 || reg_read(dev, REG_VERSION) != 2)
			continue;
		if (reg_read(dev, REG_DEVICE_ID) != device_id || nth-- > 0)
			continue;
		dev->irq = (u32)irq;
		dev->device_id = device_id;
		dev->slot = -1;
		return 0;
	}
	return -1;
}

int virtio_init(struct virtio_dev *dev, u64 wanted, int queues)
{
	if (dev->slot < 0) {
		if (slots_used == MAX_DEVICES)
			return -1;
		dev->slot = slots_used++;
	}
	reg_write(dev, REG_STATUS, 0);
	reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE);
	reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
	u64 offered = 0;
	for (u32 select = 0; select < 2; select++) {
		reg_write(dev, REG_DEVICE_FEATURES_SEL, select);
		offered |= (u64)reg_read(dev, REG_DEVICE_FEATURES) << (32 * select);
	}
	dev->features = (offered & wanted) | FEATURE_VERSION_1;
	for (u32 select = 0; select < 2; select++) {
		reg_write(dev, REG_DRIVER_FEATURES_SEL, select);
		reg_write(dev, REG_DRIVER_FEATURES, (u32)(dev->features >> (32 * select)));
	}
	reg_write(dev, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
	if (!(reg_read(dev, REG_STATUS) & STATUS_FEATURES_OK))
		return -1;
	dev->queues = queues;
	for (int q = 0; q < queues; q++) {
		struct virtq *vq = &dev->q[q];
		u8 (*pages)[4096] = ring_memory[dev->slot][q];
		memset(pages, 0, 3 * 4096);
		vq->desc = pages[0];
		vq->avail = pages[1];
		vq->used = pages[2];
		vq->next_desc = 0;
		vq->avail_idx = 0;
		vq->last_used = 0;
		reg_write(dev, REG_QUEUE_SEL, (u32)q);
		if (reg_read(dev, REG_QUEUE_NUM_MAX) < VIRTQ_SIZE)
			return -1;
		reg_write(dev, REG_QUEUE_NUM, VIRTQ_SIZE);
		u64 addresses[3] = { (u64)vq->desc, (u64)vq->avail, (u64)vq->used };
		for (int i = 0; i < 3; i++) {
			reg_write(dev, REG_QUEUE_DESC + 0x10 * (u32)i, (u32)addresses[i]);
			reg_write(dev, REG_QUEUE_DESC + 0x10 * (u32)i + 4, (u32)(addresses[i] >> 32));
		}
		reg_write(dev, REG_QUEUE_READY, 1);
	}
	reg_write(dev, REG_STATUS,
		  STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
	return 0;
}

u32 virtio_status(struct virtio_dev *dev)
{
	return reg_read(dev, REG_STATUS);
}

u32 virtio_interrupt_status(struct virtio_dev *dev)
{
	u32 status = reg_read(dev, REG_INTERRUPT_STATUS);
	reg_write(dev, REG_INTERRUPT_ACK, status);
	return status;
}

u8 virtio_config8(struct virtio_dev *dev, u32 offset)
{
	return *(volatile u8 *)(dev->base + REG_CONFIG + offset);
}

u32 virtio_config32(struct virtio_dev *dev, u32 offset)
{
	return reg_read(dev, REG_CONFIG + offset);
}

u64 virtio_config64(struct virtio_dev *dev, u32 offset)
{
	return virtio_config32(dev, offset) | (u64)virtio_config32(dev, offset + 4) << 32;
}

void virtq_readd(struct virtio_dev *dev, int q, u16 head)
{
	struct virtq *vq = &dev->q[q];
	volatile u16 *ring = (volatile u16 *)(vq->avail + 4);
	ring[vq->avail_idx % VIRTQ_SIZE] = head;
	barrier();
	vq->avail_idx++;
	*(volatile u16 *)(vq->avail + 2) = vq->avail_idx;
	barrier();
	reg_write(dev, REG_QUEUE_NOTIFY, (u32)q);
}

u16 virtq_add(struct virtio_dev *dev, int q, const struct virtio_buf *bufs, int count)
{
	struct virtq *vq = &dev->q[q];
	u16 head = vq->next_desc;
	for (int i = 0; i < count; i++) {
		u16 index = (u16)((head + i) % VIRTQ_SIZE);
		volatile u8 *desc = vq->desc + 16 * index;
		*(volatile u64 *)(desc + 0) = bufs[i].addr;
		*(volatile u32 *)(desc + 8) = bufs[i].len;
		u16 flags = bufs[i].device_writes ? DESC_F_WRITE : 0;
		if (i + 1 < count)
			flags |= DESC_F_NEXT;
		*(volatile u16 *)(desc + 12) = flags;
		*(volatile u16 *)(desc + 14) = (u16)((index + 1) % VIRTQ_SIZE);
	}
	vq->next_desc = (u16)((head + count) % VIRTQ_SIZE);
	virtq_readd(dev, q, head);
	return head;
}

int virtq_poll(struct virtio_dev *dev, int q, u16 *head, u32 *len)
{
	struct virtq *vq = &dev->q[q];
	barrier();
	u16 used_idx = *(volatile u16 *)(vq->used + 2);
	if (used_idx == vq->last_used)
		return 0;
	barrier();
	volatile u8 *element = vq->used + 4 + 8 * (vq->last_used % VIRTQ_SIZE);
	*head = (u16)*(volatile u32 *)element;
	*len = *(volatile u32 *)(element + 4);
	vq->last_used++;
	return 1;
}

int virtq_wait(struct virtio_dev *dev, int q, u16 *head, u32 *len, u64 spins)
{
	for (u64 i = 0; i < spins; i++) {
		if (virtq_poll(dev, q, head, len))
			return 1;
	}
	return 0;
}

static struct {
	u32 type;
	u32 reserved;
	u64 sector;
} blk_header;
static volatile u8 blk_status;

void virtio_blk_submit(struct virtio_dev *dev, u32 type, u64 sector, u64 data, u32 len,
		       int device_writes)
{
	blk_header.type = type;
	blk_header.reserved = 0;
	blk_header.sector = sector;
	blk_status = 0xff;
	struct virtio_buf bufs[3] = {
		{ (u64)&blk_header, sizeof(blk_header), 0 },
		{ data, len, device_writes },
		{ (u64)&blk_status, 1, 1 },
	};
	if (len == 0) {
		bufs[1] = bufs[2];
		virtq_add(dev, 0, bufs, 2);
	} else {
		virtq_add(dev, 0, bufs, 3);
	}
}

int virtio_blk_request(struct virtio_dev *dev, u32 type, u64 sector, u64 data, u32 len,
		       int device_writes, u64 spins)
{
	virtio_blk_submit(dev, type, sector, data, len, device_writes);
	u16 head;
	u32 used;
	if (!virtq_wait(dev, 0, &head, &used, spins))
		return -1;
	return blk_status;
}
