/* virtio-vsock for corral's test guests (see vsock.h). */
#include "vsock.h"

#define HDR 44
#define RX_BUFFERS 8
#define RX_BYTES (HDR + 4096)
#define SPINS 3000000ul

static u8 rx[RX_BUFFERS][RX_BYTES] __attribute__((aligned(64)));
static u8 tx[HDR + VSOCK_SEND_MAX] __attribute__((aligned(64)));
static struct virtio_dev dev;

u64 vsock_cid;
u32 vsock_received;
struct vsock_packet vsock_in;
u8 vsock_in_data[VSOCK_DATA + 1];
u32 vsock_in_len;

int vsock_setup(const char *cmdline)
{
	if (virtio_find(cmdline, VIRTIO_ID_VSOCK, 0, &dev) != 0 || virtio_init(&dev, 0, 3) != 0)
		return -1;
	vsock_cid = virtio_config64(&dev, 0);
	for (int i = 0; i < RX_BUFFERS; i++) {
		struct virtio_buf buf = { (u64)rx[i], RX_BYTES, 1 };
		virtq_add(&dev, 0, &buf, 1);
	}
	return 0;
}

void vsock_send(u16 op, u32 src_port, u32 dst_port, u32 flags, const void *data, u32 len)
{
	if (len > VSOCK_SEND_MAX)
		len = VSOCK_SEND_MAX;
	struct vsock_packet *p = (struct vsock_packet *)tx;
	p->src_cid = vsock_cid;
	p->dst_cid = HOST_CID;
	p->src_port = src_port;
	p->dst_port = dst_port;
	p->len = len;
	p->type = 1;
	p->op = op;
	p->flags = flags;
	p->buf_alloc = 65536;
	p->fwd_cnt = vsock_received;
	memcpy(tx + HDR, data, len);
	struct virtio_buf buf = { (u64)tx, HDR + len, 0 };
	virtq_add(&dev, 1, &buf, 1);
	u16 head;
	u32 used;
	virtq_wait(&dev, 1, &head, &used, SPINS);
}

int vsock_receive(u32 port)
{
	for (;;) {
		u16 head;
		u32 used;
		if (!virtq_wait(&dev, 0, &head, &used, SPINS))
			return -1;
		memcpy(&vsock_in, rx[head], HDR);
		vsock_in_len = vsock_in.len < VSOCK_DATA ? vsock_in.len : VSOCK_DATA;
		if (vsock_in_len > RX_BYTES - HDR)
			vsock_in_len = RX_BYTES - HDR;
		memcpy(vsock_in_data, rx[head] + HDR, vsock_in_len);
		vsock_in_data[vsock_in_len] = 0;
		virtq_readd(&dev, 0, head);
		if (vsock_in.dst_cid != vsock_cid || vsock_in.src_cid != HOST_CID)
			continue;
		if (vsock_in.op == OP_RW)
			vsock_received += vsock_in.len;
		if (vsock_in.dst_port == port)
			return vsock_in.op;
	}
}
