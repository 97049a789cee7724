/*
 * Gets its address by DHCPv4 over virtio-net (DISCOVER, OFFER, REQUEST, ACK, RFC 2131), then
 * resolves a peer with ARP and pings it. The peer comes from the command line (`peer_ip=A.B.C.D`);
 * the address from the network's DHCP server. Prints `dhcp: leased A.B.C.D` and
 * `ping: reply from A.B.C.D`; exits 0 when the echo reply arrived, 1 otherwise.
 */
#include "common/net.h"

#define DHCP_SERVER_PORT 67
#define DHCP_CLIENT_PORT 68
/* The fixed BOOTP part of a message, the magic cookie, and the smallest message BOOTP relays
 * and servers are required to take (RFC 1542). */
#define BOOTP_FIXED 236
#define DHCP_OPTIONS (BOOTP_FIXED + 4)
#define BOOTP_MIN 300
#define DHCP_FLAG_BROADCAST 0x8000

#define OPT_PAD 0
#define OPT_REQUESTED_IP 50
#define OPT_MESSAGE_TYPE 53
#define OPT_SERVER_ID 54
#define OPT_PARAMETERS 55
#define OPT_END 255

#define DHCPDISCOVER 1
#define DHCPOFFER 2
#define DHCPREQUEST 3
#define DHCPACK 5
#define DHCPNAK 6

/* Exchanges (DISCOVER to ACK) before giving up; each resends its requests NET_ATTEMPTS times.
 * A server may first ping the address it offers (dnsmasq does, for up to 3 seconds). */
#define EXCHANGES 4

static const u8 magic_cookie[4] = { 99, 130, 83, 99 };
static const u8 any_ip[4] = { 0, 0, 0, 0 };
static const u8 broadcast_ip[4] = { 255, 255, 255, 255 };

struct reply {
	u8 type;
	u8 yiaddr[4];
	u8 server_id[4];
	int has_server_id;
};

static u32 xid;

/* Sends a DHCP message of `type` from 0.0.0.0:68 to 255.255.255.255:67; a REQUEST names the
 * offered address and the server that offered it. */
static void send_dhcp(u8 type, const struct reply *offer)
{
	u8 *udp = net_ipv4(net_frame(net_broadcast_mac, ETH_TYPE_IPV4), IP_PROTO_UDP, any_ip,
			   broadcast_ip, UDP_HEADER + BOOTP_MIN);
	u8 *bootp = udp + UDP_HEADER;
	memset(bootp, 0, BOOTP_MIN);
	bootp[0] = 1;		/* BOOTREQUEST */
	bootp[1] = 1;		/* Ethernet */
	bootp[2] = 6;
	net_put16(bootp + 4, (u16)(xid >> 16));
	net_put16(bootp + 6, (u16)xid);
	/* No address yet: the server broadcasts its replies. */
	net_put16(bootp + 10, DHCP_FLAG_BROADCAST);
	memcpy(bootp + 28, net_mac, 6);
	memcpy(bootp + BOOTP_FIXED, magic_cookie, 4);
	u8 *option = bootp + DHCP_OPTIONS;
	*option++ = OPT_MESSAGE_TYPE;
	*option++ = 1;
	*option++ = type;
	*option++ = OPT_PARAMETERS;
	*option++ = 2;
	*option++ = 1;		/* subnet mask */
	*option++ = 3;		/* router */
	if (offer) {
		*option++ = OPT_REQUESTED_IP;
		*option++ = 4;
		memcpy(option, offer->yiaddr, 4);
		option += 4;
		*option++ = OPT_SERVER_ID;
		*option++ = 4;
		memcpy(option, offer->server_id, 4);
		option += 4;
	}
	*option = OPT_END;
	net_put16(udp, DHCP_CLIENT_PORT);
	net_put16(udp + 2, DHCP_SERVER_PORT);
	net_put16(udp + 4, UDP_HEADER + BOOTP_MIN);
	net_put16(udp + 6, 0);	/* no checksum: optional over IPv4 */
	net_send(IP_HEADER + UDP_HEADER + BOOTP_MIN);
}

/* Reads the options at `options` (`len` bytes, from the network): the message type and the
 * server identifier. Returns 0, or -1 when an option runs past the end or has a wrong length. */
static int parse_options(const u8 *options, u32 len, struct reply *reply)
{
	u32 at = 0;
	while (at < len) {
		u8 code = options[at++];
		if (code == OPT_END)
			return 0;
		if (code == OPT_PAD)
			continue;
		if (at >= len)
			return -1;
		u32 size = options[at++];
		if (size > len - at)
			return -1;
		const u8 *value = options + at;
		if (code == OPT_MESSAGE_TYPE) {
			if (size != 1)
				return -1;
			reply->type = value[0];
		} else if (code == OPT_SERVER_ID) {
			if (size != 4)
				return -1;
			memcpy(reply->server_id, value, 4);
			reply->has_server_id = 1;
		}
		at += size;
	}
	/* Options without an END: what was read stands, as most clients do. */
	return 0;
}

/* Whether `frame` is a DHCP reply to this client's current exchange; fills `reply`. */
static int dhcp_reply(const u8 *frame, u32 len, struct reply *reply)
{
	u32 header_len, total_len;
	const u8 *ip = net_ipv4_packet(frame, len, &header_len, &total_len);
	if (!ip || ip[9] != IP_PROTO_UDP || total_len - header_len < UDP_HEADER)
		return 0;
	const u8 *udp = ip + header_len;
	u32 udp_len = net_get16(udp + 4);
	if (net_get16(udp) != DHCP_SERVER_PORT || net_get16(udp + 2) != DHCP_CLIENT_PORT ||
	    udp_len < UDP_HEADER + DHCP_OPTIONS || udp_len > total_len - header_len)
		return 0;
	const u8 *bootp = udp + UDP_HEADER;
	u32 message_xid = (u32)net_get16(bootp + 4) << 16 | net_get16(bootp + 6);
	if (bootp[0] != 2 || bootp[1] != 1 || bootp[2] != 6 || message_xid != xid ||
	    memcmp(bootp + 28, net_mac, 6) != 0 ||
	    memcmp(bootp + BOOTP_FIXED, magic_cookie, 4) != 0)
		return 0;
	memset(reply, 0, sizeof(*reply));
	memcpy(reply->yiaddr, bootp + 16, 4);
	return parse_options(bootp + DHCP_OPTIONS, udp_len - UDP_HEADER - DHCP_OPTIONS, reply) ==
	       0;
}

/* Sends a message of `type` and waits for a reply of one of `wanted` or `refused`; returns the
 * reply's type, or 0 when none came after NET_ATTEMPTS sends. */
static u8 ask(u8 type, const struct reply *offer, u8 wanted, u8 refused, struct reply *reply)
{
	for (int attempt = 0; attempt < NET_ATTEMPTS; attempt++) {
		send_dhcp(type, offer);
		u64 deadline = net_deadline();
		u32 len;
		const u8 *frame;
		while ((frame = net_receive(&len, deadline))) {
			if (dhcp_reply(frame, len, reply) &&
			    (reply->type == wanted || reply->type == refused))
				return reply->type;
		}
	}
	return 0;
}

/* An address a server may hand out: not 0.0.0.0, multicast, reserved or broadcast. */
static int usable(const u8 ip[4])
{
	return ip[0] != 0 && ip[0] < 224 && memcmp(ip, broadcast_ip, 4) != 0;
}

/* Leases an address into net_ip; returns 0, or -1 when no server gave one. */
static int dhcp_lease(void)
{
	for (int exchange = 0; exchange < EXCHANGES; exchange++) {
		xid = (u32)net_mac[2] << 24 | (u32)net_mac[3] << 16 | (u32)net_mac[4] << 8 |
		      net_mac[5];
		xid += (u32)exchange;
		struct reply offer, ack;
		if (ask(DHCPDISCOVER, 0, DHCPOFFER, DHCPOFFER, &offer) != DHCPOFFER)
			continue;
		if (!offer.has_server_id || !usable(offer.yiaddr)) {
			serial_puts("dhcp: ignoring an offer without a server id or usable address\n");
			continue;
		}
		serial_puts("dhcp: offered ");
		serial_put_ip(offer.yiaddr);
		serial_puts(" by ");
		serial_put_ip(offer.server_id);
		serial_puts("\n");
		u8 answer = ask(DHCPREQUEST, &offer, DHCPACK, DHCPNAK, &ack);
		if (answer == DHCPACK && memcmp(ack.yiaddr, offer.yiaddr, 4) == 0) {
			memcpy(net_ip, ack.yiaddr, 4);
			return 0;
		}
		serial_puts(answer == DHCPNAK ? "dhcp: refused (NAK), starting over\n"
					      : "dhcp: no acknowledgement, starting over\n");
	}
	return -1;
}

void guest_run(const struct boot_info *boot)
{
	u8 peer_ip[4], peer_mac[6];
	int link = net_init(boot->cmdline);
	if (link < 0 || cmdline_ip(boot->cmdline, "peer_ip=", peer_ip) != 0) {
		serial_puts("dhcp: no virtio-net device or no peer_ip= on the command line\n");
		debug_exit(1);
	}
	serial_puts("dhcp: mac ");
	serial_put_mac(net_mac);
	serial_puts(link ? ", link up\n" : ", link down\n");
	if (dhcp_lease() != 0) {
		serial_puts("dhcp: FAILED: no lease\n");
		debug_exit(1);
	}
	serial_puts("dhcp: leased ");
	serial_put_ip(net_ip);
	serial_puts("\n");
	if (net_arp_resolve(peer_ip, peer_mac) != 0) {
		serial_puts("ping: FAILED: no ARP reply from ");
		serial_put_ip(peer_ip);
		serial_puts("\n");
		debug_exit(1);
	}
	if (net_ping(peer_ip, peer_mac) != 0) {
		serial_puts("ping: FAILED: no echo reply from ");
		serial_put_ip(peer_ip);
		serial_puts("\n");
		debug_exit(1);
	}
	serial_puts("ping: reply from ");
	serial_put_ip(peer_ip);
	serial_puts("\n");
	debug_exit(0);
}
