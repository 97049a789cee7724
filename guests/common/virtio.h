/*
 * A minimal polling virtio-mmio (version 2) driver for corral's test guests: finds devices from
 * the `virtio_mmio.device=SIZE@ADDR:IRQ` entries on the command line, negotiates features, sets up
 * split rings and moves buffers. No interrupts: the guest polls the used rings.
 */
#ifndef CORRAL_VIRTIO_H
#define CORRAL_VIRTIO_H

#include "guest.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTQ_SIZE 16
#define VIRTIO_MAX_QUEUES 3

struct virtq {
	volatile u8 *desc;
	volatile u8 *avail;
	volatile u8 *used;
	u16 next_desc;
	u16 avail_idx;
	u16 last_used;
};

struct virtio_dev {
	u64 base;
	u32 irq;
	u32 device_id;
	u64 features;		/* negotiated */
	int slot;		/* which static ring memory it uses */
	int queues;
	struct virtq q[VIRTIO_MAX_QUEUES];
};

struct virtio_buf {
	u64 addr;
	u32 len;
	int device_writes;
};

/* Finds the `nth` (from 0) device of type `device_id`; returns 0 when found. */
int virtio_find(const char *cmdline, u32 device_id, int nth, struct virtio_dev *dev);
/* Resets the device and brings it to DRIVER_OK with the offered subset of `wanted` features
 * (plus VIRTIO_F_VERSION_1) and `queues` queues; returns 0, or -1 if the device refused. */
int virtio_init(struct virtio_dev *dev, u64 wanted, int queues);
u32 virtio_status(struct virtio_dev *dev);
u32 virtio_interrupt_status(struct virtio_dev *dev);
u8 virtio_config8(struct virtio_dev *dev, u32 offset);
u32 virtio_config32(struct virtio_dev *dev, u32 offset);
u64 virtio_config64(struct virtio_dev *dev, u32 offset);
/* Makes a chain of `count` buffers available on queue `q` and notifies; returns its head. */
u16 virtq_add(struct virtio_dev *dev, int q, const struct virtio_buf *bufs, int count);
/* Makes a chain whose descriptors are already set up (by virtq_add) available again. */
void virtq_readd(struct virtio_dev *dev, int q, u16 head);
/* Takes the next used element: returns 1 and fills head and len, or 0 if none is there yet. */
int virtq_poll(struct virtio_dev *dev, int q, u16 *head, u32 *len);
/* Polls until a used element arrives (returns 1) or about `spins` polls pass (returns 0). */
int virtq_wait(struct virtio_dev *dev, int q, u16 *head, u32 *len, u64 spins);

/* virtio-blk (virtio 1.x section 5.2): request types, statuses, feature bits. */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_F_SEG_MAX (1ul << 2)
#define VIRTIO_BLK_F_RO (1ul << 5)
#define VIRTIO_BLK_F_FLUSH (1ul << 9)
#define VIRTIO_BLK_F_DISCARD (1ul << 13)
#define VIRTIO_BLK_F_WRITE_ZEROES (1ul << 14)
#define VIRTIO_BLK_SECTOR 512

/* Makes one virtio-blk request available on queue 0: the header, `len` bytes at `data` (written
 * by the device when `device_writes`; no data descriptor when `len` is 0), the status byte. One
 * request at a time: the header and status live in static memory. */
void virtio_blk_submit(struct virtio_dev *dev, u32 type, u64 sector, u64 data, u32 len,
		       int device_writes);
/* Submits a request and polls for it (about `spins` polls); returns its status, or -1 when the
 * device never answered. */
int virtio_blk_request(struct virtio_dev *dev, u32 type, u64 sector, u64 data, u32 len,
		       int device_writes, u64 spins);

void *memset(void *dst, int value, u64 len);
void *memcpy(void *dst, const void *src, u64 len);
int memcmp(const void *a, const void *b, u64 len);

#endif
