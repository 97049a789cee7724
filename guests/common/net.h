/*
 * A minimal IPv4 stack over the first virtio-net device for corral's test guests: Ethernet
 * frames, ARP resolution and ICMP echo, one frame in flight at a time, every wait bounded. The
 * guest's address is `net_ip` (0.0.0.0 until the guest sets it, from its command line or DHCP).
 * Everything received comes from the network: callers check every length and field they read.
 */
#ifndef CORRAL_NET_H
#define CORRAL_NET_H

#include "virtio.h"

#define ETH_HEADER 14
#define ETH_TYPE_IPV4 0x0800
#define ETH_TYPE_ARP 0x0806
#define IP_HEADER 20
#define IP_PROTO_ICMP 1
#define IP_PROTO_UDP 17
#define UDP_HEADER 8
/* The largest Ethernet frame (header and payload) the guest sends or takes. */
#define NET_FRAME 1514
/* How long one wait for an answer lasts, in TSC cycles: about a second at 2 to 4 GHz. The VMM
 * offers no timer to calibrate the TSC against, and a bound needs no precision; counting polls
 * instead would tie it to the guest's speed, which a host that emulates guest code slows by
 * orders of magnitude. */
#define NET_WAIT_CYCLES (3ul << 30)
/* Requests sent before giving up. */
#define NET_ATTEMPTS 3

extern const u8 net_broadcast_mac[6];
extern u8 net_mac[6];
extern u8 net_ip[4];

/* Finds and starts the first virtio-net device and posts the receive buffers: returns 1 when
 * its link is up, 0 when down, -1 when there is no device or it refused. Reads `net_mac`. */
int net_init(const char *cmdline);
/* Starts a frame to `dst` of EtherType `type` in the transmit buffer; returns its payload. */
u8 *net_frame(const u8 dst[6], u16 type);
/* Writes an IPv4 header (no options, TTL 64, checksummed) at `ip` for `payload_len` bytes of
 * protocol `proto` from `src` to `dst`; returns the payload after it. */
u8 *net_ipv4(u8 *ip, u8 proto, const u8 src[4], const u8 dst[4], u32 payload_len);
/* Sends the frame started by net_frame with `payload_len` bytes of payload. */
void net_send(u32 payload_len);
/* The end of a wait that starts now (a TSC value), for net_receive. */
u64 net_deadline(void);
/* Waits until `deadline` for a frame of at least an Ethernet header; returns its bytes and sets
 * `len`, or 0 when none came in time. The frame stays valid until the next call.
 * An ARP request for `net_ip` is answered on the way (through the transmit buffer). */
const u8 *net_receive(u32 *len, u64 deadline);
/* The IPv4 packet of an Ethernet frame, checked: version 4, a header within the frame, a total
 * length within it. Returns the packet and sets `header_len` and `total_len`, or 0. */
const u8 *net_ipv4_packet(const u8 *frame, u32 len, u32 *header_len, u32 *total_len);

/* Resolves `ip` to `mac` by ARP; returns 0, or -1 when no reply came. */
int net_arp_resolve(const u8 ip[4], u8 mac[6]);
/* Sends an ICMP echo request to `ip` at `mac`; returns 0 when its reply came, -1 otherwise. */
int net_ping(const u8 ip[4], const u8 mac[6]);

void net_put16(u8 *p, u16 value);
u16 net_get16(const u8 *p);
u16 net_checksum(const u8 *data, u32 len);
/* The dotted quad after `key` (e.g. "peer_ip=") on the command line: returns 0, or -1 when the
 * key is missing or its value is not an IPv4 address. */
int cmdline_ip(const char *cmdline, const char *key, u8 ip[4]);
void serial_put_mac(const u8 mac[6]);
void serial_put_ip(const u8 ip[4]);

#endif
