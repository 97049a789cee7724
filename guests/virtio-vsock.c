/*
 * Opens vsock connections both ways through virtio-vsock:
 * 1. guest to host: connects to host port 6000, sends "hello from guest\n", expects
 *    "hello guest\n" back, shuts the connection down;
 * 2. host to guest: accepts a connection on port 5000, expects "ping\n", answers "pong\n", and
 *    waits for the host to close.
 * Exits 0 when both worked, 1 otherwise.
 */
#include "common/virtio.h"

#define HDR 44
#define RX_BUFFERS 8
#define RX_BYTES (HDR + 4096)
#define SPINS 3000000ul
#define HOST_CID 2
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define GUEST_PORT 1024
#define HOST_LISTEN_PORT 6000
#define GUEST_LISTEN_PORT 5000

struct packet {
	u64 src_cid, dst_cid;
	u32 src_port, dst_port, len;
	u16 type, op;
	u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

static u8 rx[RX_BUFFERS][RX_BYTES] __attribute__((aligned(64)));
static u8 tx[HDR + 256] __attribute__((aligned(64)));
static struct virtio_dev dev;
static u64 cid;
static u32 received;	/* payload bytes consumed on the current connection: its fwd_cnt */
static struct packet in;
static char in_data[256];

static void send(u16 op, u32 src_port, u32 dst_port, u32 flags, const char *data, u32 len)
{
	struct packet *p = (struct packet *)tx;
	p->src_cid = cid;
	p->dst_cid = HOST_CID;
	p->src_port = src_port;
	p->dst_port = dst_port;
	p->len = len;
	p->type = 1;
	p->op = op;
	p->flags = flags;
	p->buf_alloc = 65536;
	p->fwd_cnt = received;
	memcpy(tx + HDR, data, len);
	struct virtio_buf buf = { (u64)tx, HDR + len, 0 };
	virtq_add(&dev, 1, &buf, 1);
	u16 head;
	u32 used;
	virtq_wait(&dev, 1, &head, &used, SPINS);
}

/* Waits for the next packet for `port`; returns its op, or -1 on timeout. */
static int receive(u32 port)
{
	for (;;) {
		u16 head;
		u32 used;
		if (!virtq_wait(&dev, 0, &head, &used, SPINS))
			return -1;
		memcpy(&in, rx[head], HDR);
		u32 len = in.len < sizeof(in_data) - 1 ? in.len : sizeof(in_data) - 1;
		memcpy(in_data, rx[head] + HDR, len);
		in_data[len] = 0;
		virtq_readd(&dev, 0, head);
		if (in.op == OP_RW)
			received += in.len;
		if (in.dst_port == port && in.dst_cid == cid && in.src_cid == HOST_CID)
			return in.op;
	}
}

/* Waits for data on `port`, skipping credit updates. */
static int receive_data(u32 port)
{
	int op;
	do
		op = receive(port);
	while (op > 0 && op != OP_RW && op != OP_RST && op != OP_SHUTDOWN);
	return op;
}

static int fail(const char *why)
{
	serial_puts("virtio-vsock: FAILED: ");
	serial_puts(why);
	serial_puts("\n");
	debug_exit(1);
}

void guest_run(const struct boot_info *boot)
{
	if (virtio_find(boot->cmdline, VIRTIO_ID_VSOCK, 0, &dev) != 0 || virtio_init(&dev, 0, 3) != 0)
		fail("no device");
	cid = virtio_config64(&dev, 0);
	serial_puts("virtio-vsock: cid ");
	serial_put_dec(cid);
	serial_puts("\n");
	for (int i = 0; i < RX_BUFFERS; i++) {
		struct virtio_buf buf = { (u64)rx[i], RX_BYTES, 1 };
		virtq_add(&dev, 0, &buf, 1);
	}

	/* 1. guest to host */
	send(OP_REQUEST, GUEST_PORT, HOST_LISTEN_PORT, 0, 0, 0);
	if (receive(GUEST_PORT) != OP_RESPONSE)
		fail("the host did not accept the connection to port 6000");
	static const char hello[] = "hello from guest\n";
	send(OP_RW, GUEST_PORT, HOST_LISTEN_PORT, 0, hello, sizeof(hello) - 1);
	if (receive_data(GUEST_PORT) != OP_RW || memcmp(in_data, "hello guest\n", 12) != 0)
		fail("no answer on the guest's connection");
	serial_puts("virtio-vsock: guest->host connection got: ");
	serial_puts(in_data);
	send(OP_SHUTDOWN, GUEST_PORT, HOST_LISTEN_PORT, 3, 0, 0);
	int op;
	do
		op = receive(GUEST_PORT);
	while (op > 0 && op != OP_RST);
	if (op != OP_RST)
		fail("the host did not reset the shut-down connection");

	/* 2. host to guest */
	received = 0;
	serial_puts("virtio-vsock: listening on port 5000\n");
	do
		op = receive(GUEST_LISTEN_PORT);
	while (op > 0 && op != OP_REQUEST);
	if (op != OP_REQUEST)
		fail("no connection request from the host");
	u32 host_port = in.src_port;
	send(OP_RESPONSE, GUEST_LISTEN_PORT, host_port, 0, 0, 0);
	if (receive_data(GUEST_LISTEN_PORT) != OP_RW || memcmp(in_data, "ping\n", 5) != 0)
		fail("no ping from the host");
	send(OP_RW, GUEST_LISTEN_PORT, host_port, 0, "pong\n", 5);
	if (receive_data(GUEST_LISTEN_PORT) != OP_SHUTDOWN)
		fail("the host did not close its connection");
	send(OP_RST, GUEST_LISTEN_PORT, host_port, 0, 0, 0);
	serial_puts("virtio-vsock: host->guest connection answered\n");
	debug_exit(0);
}
