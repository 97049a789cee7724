/*
 * virtio-vsock for corral's test guests: the first vsock device with its receive buffers
 * posted, packets sent and received one at a time, every wait bounded. Everything received
 * comes from the host: callers check every field they read.
 */
#ifndef CORRAL_VSOCK_H
#define CORRAL_VSOCK_H

#include "virtio.h"

#define HOST_CID 2
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
/* The most payload a received packet keeps (the rest of a longer one is dropped). */
#define VSOCK_DATA 4096
/* The most payload one sent packet carries. */
#define VSOCK_SEND_MAX 256

struct vsock_packet {
	u64 src_cid, dst_cid;
	u32 src_port, dst_port, len;
	u16 type, op;
	u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

/* This guest's CID, from the device's configuration. */
extern u64 vsock_cid;
/* Payload bytes consumed on the current connection: its fwd_cnt (a guest serving one connection
 * at a time sets it to 0 for each new one). */
extern u32 vsock_received;
/* The last packet vsock_receive returned, its payload (NUL-terminated) and the payload's kept
 * length. */
extern struct vsock_packet vsock_in;
extern u8 vsock_in_data[VSOCK_DATA + 1];
extern u32 vsock_in_len;

/* Finds and starts the device named on `cmdline`; 0, or -1 when there is none. */
int vsock_setup(const char *cmdline);
/* Sends one packet to the host (at most VSOCK_SEND_MAX bytes of `data`) and waits for the
 * device to take it. */
void vsock_send(u16 op, u32 src_port, u32 dst_port, u32 flags, const void *data, u32 len);
/* Waits for the next packet from the host to `port` of this guest; returns its op, or -1 when
 * none came in time. */
int vsock_receive(u32 port);

#endif
