/*
 * A stand-in for `corral guest agent` on vsock port 1024, one connection at a time. It reads
 * each request frame whole from one packet and answers by the request's type: `hello` (protocol
 * version 1), `ping`, `exec` (any command prints one line and exits 3), and `shutdown`, after
 * which it powers off (debug-exit 0). It ignores
 * Ctrl-Alt-Del, so a clean stop can only come through it.
 * With `agent.hostile=1` on the command line it answers every request with the length prefix
 * of a 64 MiB frame and nothing more: the host must refuse that at once.
 */
#include "common/vsock.h"

#define AGENT_PORT 1024

static void send(u16 op, u32 dst_port, const u8 *data, u32 len)
{
	vsock_send(op, AGENT_PORT, dst_port, 0, data, len);
}

/* Sends `json` as one protocol frame: its big-endian length, then the text. */
static void send_message(u32 dst_port, const char *json)
{
	u8 frame[128];
	u32 len = 0;
	while (json[len])
		len++;
	frame[0] = (u8)(len >> 24);
	frame[1] = (u8)(len >> 16);
	frame[2] = (u8)(len >> 8);
	frame[3] = (u8)len;
	memcpy(frame + 4, json, len);
	send(OP_RW, dst_port, frame, len + 4);
}

static int contains(const u8 *data, u32 len, const char *needle)
{
	u32 n = 0;
	while (needle[n])
		n++;
	for (u32 i = 0; i + n <= len; i++)
		if (memcmp(data + i, needle, n) == 0)
			return 1;
	return 0;
}

static void answer(u32 host_port, u32 len)
{
	if (contains(vsock_in_data, len, "\"type\":\"hello\"")) {
		send_message(host_port, "{\"type\":\"hello\",\"version\":1,\"agent\":\"vsock-agent\"}");
	} else if (contains(vsock_in_data, len, "\"type\":\"ping\"")) {
		send_message(host_port, "{\"type\":\"pong\"}");
	} else if (contains(vsock_in_data, len, "\"type\":\"exec\"")) {
		/* Whatever the command: one line on stdout (a data frame of stream 2), status 3; the
		 * line tells when the host asked for a terminal of 33 by 111. */
		static const char plain[] = "output from vsock-agent\n";
		static const char terminal[] = "output on a 33x111 terminal\n";
		int on_terminal = contains(vsock_in_data, len, "\"tty\":{\"rows\":33,\"cols\":111}");
		const char *out = on_terminal ? terminal : plain;
		u8 frame[64];
		u32 n = on_terminal ? sizeof(terminal) - 1 : sizeof(plain) - 1;
		frame[0] = 0;
		frame[1] = 0;
		frame[2] = 0;
		frame[3] = (u8)(n + 1);
		frame[4] = 2;
		memcpy(frame + 5, out, n);
		send_message(host_port, "{\"type\":\"ready\"}");
		send(OP_RW, host_port, frame, n + 5);
		send_message(host_port, "{\"type\":\"exited\",\"code\":3}");
	} else if (contains(vsock_in_data, len, "\"type\":\"shutdown\"")) {
		send_message(host_port, "{\"type\":\"done\"}");
		serial_puts("vsock-agent: shutdown requested, powering off\n");
		debug_exit(0);
	} else {
		send_message(host_port, "{\"type\":\"error\",\"message\":\"not in this test guest\"}");
	}
}

void guest_run(const struct boot_info *boot)
{
	if (vsock_setup(boot->cmdline) != 0) {
		serial_puts("vsock-agent: FAILED: no device\n");
		debug_exit(1);
	}
	int hostile = cmdline_u64(boot->cmdline, "agent.hostile=", 0) != 0;
	serial_puts(hostile ? "vsock-agent: hostile, listening on port 1024\n"
			    : "vsock-agent: listening on port 1024\n");
	static const u8 oversized[4] = { 0x04, 0, 0, 0 };	/* 64 MiB, big-endian */
	for (;;) {
		switch (vsock_receive(AGENT_PORT)) {
		case OP_REQUEST:
			/* One connection at a time: the host opens the next after closing this one. */
			vsock_received = 0;
			send(OP_RESPONSE, vsock_in.src_port, 0, 0);
			serial_puts("vsock-agent: accepted a connection\n");
			break;
		case OP_RW:
			if (hostile)
				send(OP_RW, vsock_in.src_port, oversized, sizeof(oversized));
			else
				answer(vsock_in.src_port, vsock_in_len);
			break;
		case OP_SHUTDOWN:
			send(OP_RST, vsock_in.src_port, 0, 0);
			break;
		}
	}
}
