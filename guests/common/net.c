/* The test guests' IPv4 stack over virtio-net; see net.h. */
#include "net.h"

#define NET_F_MAC (1ul << 5)
#define NET_F_STATUS (1ul << 16)
/* struct virtio_net_hdr with VIRTIO_F_VERSION_1: every frame starts with it. */
#define VIRTIO_NET_HEADER 12
#define RX_BUFFERS 8
#define RX_QUEUE 0
#define TX_QUEUE 1

static u8 rx[RX_BUFFERS][VIRTIO_NET_HEADER + NET_FRAME] __attribute__((aligned(64)));
static u8 tx[VIRTIO_NET_HEADER + NET_FRAME] __attribute__((aligned(64)));
static struct virtio_dev dev;
/* The receive buffer the last returned frame lives in, posted again by the next receive. */
static int held = -1;

const u8 net_broadcast_mac[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
u8 net_mac[6];
u8 net_ip[4];

void net_put16(u8 *p, u16 value)
{
	p[0] = (u8)(value >> 8);
	p[1] = (u8)value;
}

u16 net_get16(const u8 *p)
{
	return (u16)(p[0] << 8 | p[1]);
}

u16 net_checksum(const u8 *data, u32 len)
{
	u32 sum = 0;
	for (u32 i = 0; i + 1 < len; i += 2)
		sum += net_get16(data + i);
	if (len & 1)
		sum += (u32)data[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

int net_init(const char *cmdline)
{
	if (virtio_find(cmdline, VIRTIO_ID_NET, 0, &dev) != 0 ||
	    virtio_init(&dev, NET_F_MAC | NET_F_STATUS, 2) != 0)
		return -1;
	for (int i = 0; i < 6; i++)
		net_mac[i] = virtio_config8(&dev, (u32)i);
	/* One descriptor per receive buffer, posted once and reposted after use. */
	for (int i = 0; i < RX_BUFFERS; i++) {
		struct virtio_buf buf = { (u64)rx[i], sizeof(rx[i]), 1 };
		virtq_add(&dev, RX_QUEUE, &buf, 1);
	}
	return (virtio_config8(&dev, 6) & 1) != 0;
}

u8 *net_frame(const u8 dst[6], u16 type)
{
	u8 *eth = tx + VIRTIO_NET_HEADER;
	memcpy(eth, dst, 6);
	memcpy(eth + 6, net_mac, 6);
	net_put16(eth + 12, type);
	return eth + ETH_HEADER;
}

u8 *net_ipv4(u8 *ip, u8 proto, const u8 src[4], const u8 dst[4], u32 payload_len)
{
	memset(ip, 0, IP_HEADER);
	ip[0] = 0x45;
	net_put16(ip + 2, (u16)(IP_HEADER + payload_len));
	ip[8] = 64;
	ip[9] = proto;
	memcpy(ip + 12, src, 4);
	memcpy(ip + 16, dst, 4);
	net_put16(ip + 10, net_checksum(ip, IP_HEADER));
	return ip + IP_HEADER;
}

static u64 rdtsc(void)
{
	u32 low, high;
	__asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
	return (u64)high << 32 | low;
}

u64 net_deadline(void)
{
	return rdtsc() + NET_WAIT_CYCLES;
}

/* Polls queue `q` until a used element arrives (returns 1) or the TSC passes `deadline`. */
static int wait_used(int q, u16 *head, u32 *len, u64 deadline)
{
	do {
		if (virtq_poll(&dev, q, head, len))
			return 1;
	} while ((long)(rdtsc() - deadline) < 0);
	return 0;
}

void net_send(u32 payload_len)
{
	memset(tx, 0, VIRTIO_NET_HEADER);
	struct virtio_buf buf = { (u64)tx, VIRTIO_NET_HEADER + ETH_HEADER + payload_len, 0 };
	virtq_add(&dev, TX_QUEUE, &buf, 1);
	u16 head;
	u32 used;
	wait_used(TX_QUEUE, &head, &used, net_deadline());
}

/* Answers an ARP request for our address, so that peers reach us without guessing. */
static void answer_arp(const u8 *frame, u32 len)
{
	static const u8 none[4];
	if (len < ETH_HEADER + 28 || net_get16(frame + 12) != ETH_TYPE_ARP ||
	    memcmp(net_ip, none, 4) == 0)
		return;
	const u8 *request = frame + ETH_HEADER;
	if (net_get16(request) != 1 || net_get16(request + 2) != ETH_TYPE_IPV4 || request[4] != 6 ||
	    request[5] != 4 || net_get16(request + 6) != 1 || memcmp(request + 24, net_ip, 4) != 0)
		return;
	u8 *reply = net_frame(request + 8, ETH_TYPE_ARP);
	memcpy(reply, request, 6);
	net_put16(reply + 6, 2);
	memcpy(reply + 8, net_mac, 6);
	memcpy(reply + 14, net_ip, 4);
	memcpy(reply + 18, request + 8, 10);
	net_send(28);
}

const u8 *net_receive(u32 *len, u64 deadline)
{
	for (;;) {
		if (held >= 0) {
			virtq_readd(&dev, RX_QUEUE, (u16)held);
			held = -1;
		}
		u16 head;
		u32 used;
		if (!wait_used(RX_QUEUE, &head, &used, deadline))
			return 0;
		/* The device names the buffer and the length: neither is trusted past our bounds. */
		if (head >= RX_BUFFERS)
			continue;
		held = head;
		if (used < VIRTIO_NET_HEADER + ETH_HEADER || used > sizeof(rx[head]))
			continue;
		*len = used - VIRTIO_NET_HEADER;
		answer_arp(rx[head] + VIRTIO_NET_HEADER, *len);
		return rx[head] + VIRTIO_NET_HEADER;
	}
}

const u8 *net_ipv4_packet(const u8 *frame, u32 len, u32 *header_len, u32 *total_len)
{
	if (len < ETH_HEADER + IP_HEADER || net_get16(frame + 12) != ETH_TYPE_IPV4)
		return 0;
	const u8 *ip = frame + ETH_HEADER;
	u32 ihl = (u32)(ip[0] & 15) * 4;
	u32 total = net_get16(ip + 2);
	if (ip[0] >> 4 != 4 || ihl < IP_HEADER || total < ihl || total > len - ETH_HEADER)
		return 0;
	*header_len = ihl;
	*total_len = total;
	return ip;
}

static int arp_reply_from(const u8 *frame, u32 len, const u8 ip[4])
{
	if (len < ETH_HEADER + 28 || net_get16(frame + 12) != ETH_TYPE_ARP)
		return 0;
	const u8 *arp = frame + ETH_HEADER;
	return net_get16(arp) == 1 && net_get16(arp + 2) == ETH_TYPE_IPV4 && arp[4] == 6 &&
	       arp[5] == 4 && net_get16(arp + 6) == 2 && memcmp(arp + 14, ip, 4) == 0;
}

int net_arp_resolve(const u8 ip[4], u8 mac[6])
{
	for (int attempt = 0; attempt < NET_ATTEMPTS; attempt++) {
		u8 *arp = net_frame(net_broadcast_mac, ETH_TYPE_ARP);
		net_put16(arp, 1);		/* Ethernet */
		net_put16(arp + 2, ETH_TYPE_IPV4);
		arp[4] = 6;
		arp[5] = 4;
		net_put16(arp + 6, 1);		/* request */
		memcpy(arp + 8, net_mac, 6);
		memcpy(arp + 14, net_ip, 4);
		memset(arp + 18, 0, 6);
		memcpy(arp + 24, ip, 4);
		net_send(28);
		u64 deadline = net_deadline();
		u32 len;
		const u8 *frame;
		while ((frame = net_receive(&len, deadline))) {
			if (arp_reply_from(frame, len, ip)) {
				memcpy(mac, frame + ETH_HEADER + 8, 6);
				return 0;
			}
		}
	}
	return -1;
}

int net_ping(const u8 ip[4], const u8 mac[6])
{
	static const char payload[] = "corral virtio-net ping";
	const u32 icmp_len = 8 + sizeof(payload);
	for (u16 sequence = 1; sequence <= NET_ATTEMPTS; sequence++) {
		u8 *icmp = net_ipv4(net_frame(mac, ETH_TYPE_IPV4), IP_PROTO_ICMP, net_ip, ip,
				    icmp_len);
		memset(icmp, 0, 8);
		icmp[0] = 8;		/* echo request */
		net_put16(icmp + 4, 0x4352);
		net_put16(icmp + 6, sequence);
		memcpy(icmp + 8, payload, sizeof(payload));
		net_put16(icmp + 2, net_checksum(icmp, icmp_len));
		net_send(IP_HEADER + icmp_len);
		u64 deadline = net_deadline();
		u32 len, header_len, total_len;
		const u8 *frame;
		while ((frame = net_receive(&len, deadline))) {
			const u8 *rip = net_ipv4_packet(frame, len, &header_len, &total_len);
			if (!rip || rip[9] != IP_PROTO_ICMP || memcmp(rip + 12, ip, 4) != 0 ||
			    total_len - header_len < icmp_len)
				continue;
			const u8 *reply = rip + header_len;
			u16 answered = net_get16(reply + 6);
			/* A late reply to an earlier request counts too. */
			if (reply[0] == 0 && net_get16(reply + 4) == 0x4352 && answered >= 1 &&
			    answered <= sequence &&
			    memcmp(reply + 8, payload, sizeof(payload)) == 0)
				return 0;
		}
	}
	return -1;
}

int cmdline_ip(const char *cmdline, const char *key, u8 ip[4])
{
	for (const char *s = cmdline; s && *s; s++) {
		const char *k = key, *p = s;
		while (*k && *p == *k)
			k++, p++;
		if (*k || (s != cmdline && s[-1] != ' '))
			continue;
		for (int i = 0; i < 4; i++) {
			u32 value = 0;
			int digits = 0;
			while (*p >= '0' && *p <= '9' && digits < 4)
				value = value * 10 + (u32)(*p++ - '0'), digits++;
			if (digits == 0 || value > 255 || (i < 3 && *p++ != '.'))
				return -1;
			ip[i] = (u8)value;
		}
		return (*p == ' ' || *p == 0) ? 0 : -1;
	}
	return -1;
}

static void put_hex8(u8 value)
{
	const char *hex = "0123456789abcdef";
	serial_putc(hex[value >> 4]);
	serial_putc(hex[value & 15]);
}

void serial_put_mac(const u8 mac[6])
{
	for (int i = 0; i < 6; i++) {
		put_hex8(mac[i]);
		if (i < 5)
			serial_putc(':');
	}
}

void serial_put_ip(const u8 ip[4])
{
	for (int i = 0; i < 4; i++) {
		serial_put_dec(ip[i]);
		if (i < 3)
			serial_putc('.');
	}
}
