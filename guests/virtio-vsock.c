/*
 * Opens vsock connections both ways through virtio-vsock:
 * 1. guest to host: connects to host port 6000, sends "hello from guest\n", expects
 *    "hello guest\n" back, shuts the connection down;
 * 2. host to guest: accepts a connection on port 5000, expects "ping\n", answers "pong\n", and
 *    waits for the host to close.
 * Exits 0 when both worked, 1 otherwise.
 */
#include "common/vsock.h"

#define GUEST_PORT 1024
#define HOST_LISTEN_PORT 6000
#define GUEST_LISTEN_PORT 5000

/* Waits for data on `port`, skipping credit updates. */
static int receive_data(u32 port)
{
	int op;
	do
		op = vsock_receive(port);
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
	if (vsock_setup(boot->cmdline) != 0)
		fail("no device");
	serial_puts("virtio-vsock: cid ");
	serial_put_dec(vsock_cid);
	serial_puts("\n");

	/* 1. guest to host */
	vsock_send(OP_REQUEST, GUEST_PORT, HOST_LISTEN_PORT, 0, 0, 0);
	if (vsock_receive(GUEST_PORT) != OP_RESPONSE)
		fail("the host did not accept the connection to port 6000");
	static const char hello[] = "hello from guest\n";
	vsock_send(OP_RW, GUEST_PORT, HOST_LISTEN_PORT, 0, hello, sizeof(hello) - 1);
	if (receive_data(GUEST_PORT) != OP_RW || memcmp(vsock_in_data, "hello guest\n", 12) != 0)
		fail("no answer on the guest's connection");
	serial_puts("virtio-vsock: guest->host connection got: ");
	serial_puts((const char *)vsock_in_data);
	vsock_send(OP_SHUTDOWN, GUEST_PORT, HOST_LISTEN_PORT, 3, 0, 0);
	int op;
	do
		op = vsock_receive(GUEST_PORT);
	while (op > 0 && op != OP_RST);
	if (op != OP_RST)
		fail("the host did not reset the shut-down connection");

	/* 2. host to guest */
	vsock_received = 0;
	serial_puts("virtio-vsock: listening on port 5000\n");
	do
		op = vsock_receive(GUEST_LISTEN_PORT);
	while (op > 0 && op != OP_REQUEST);
	if (op != OP_REQUEST)
		fail("no connection request from the host");
	u32 host_port = vsock_in.src_port;
	vsock_send(OP_RESPONSE, GUEST_LISTEN_PORT, host_port, 0, 0, 0);
	if (receive_data(GUEST_LISTEN_PORT) != OP_RW || memcmp(vsock_in_data, "ping\n", 5) != 0)
		fail("no ping from the host");
	vsock_send(OP_RW, GUEST_LISTEN_PORT, host_port, 0, "pong\n", 5);
	if (receive_data(GUEST_LISTEN_PORT) != OP_SHUTDOWN)
		fail("the host did not close its connection");
	vsock_send(OP_RST, GUEST_LISTEN_PORT, host_port, 0, 0, 0);
	serial_puts("virtio-vsock: host->guest connection answered\n");
	debug_exit(0);
}
