/*
 * Talks to a peer over virtio-net: reads its MAC from the device, resolves the peer's address with
 * ARP and pings it (ICMP echo). Addresses come from the command line: `guest_ip=10.0.0.2
 * peer_ip=10.0.0.1`. Exits 0 when the echo reply arrived, 1 otherwise.
 */
#include "common/virtio.h"

#define NET_F_MAC (1ul << 5)
#define NET_F_STATUS (1ul << 16)
#define HEADER 12
#define RX_BUFFERS 8
#define FRAME 1536
#define SPINS 3000000ul

static u8 rx[RX_BUFFERS][HEADER + FRAME] __attribute__((aligned(64)));
static u8 tx[HEADER + FRAME] __attribute__((aligned(64)));
static u8 my_mac[6], peer_mac[6];
static u8 my_ip[4], peer_ip[4];
static struct virtio_dev dev;

static int parse_ip(const char *cmdline, const char *key, u8 ip[4])
{
	for (const char *s = cmdline; *s; s++) {
		const char *k = key, *p = s;
		while (*k && *p == *k)
			k++, p++;
		if (*k)
			continue;
		for (int i = 0; i < 4; i++) {
			u32 value = 0;
			while (*p >= '0' && *p <= '9')
				value = value * 10 + (u32)(*p++ - '0');
			ip[i] = (u8)value;
			if (i < 3 && *p++ != '.')
				return -1;
		}
		return 0;
	}
	return -1;
}

static void put16(u8 *p, u16 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}

static u16 get16(const u8 *p)
{
	return (u16)(p[0] << 8 | p[1]);
}

static u16 checksum(const u8 *data, u32 len)
{
	u32 sum = 0;
	for (u32 i = 0; i + 1 < len; i += 2)
		sum += get16(data + i);
	if (len & 1)
		sum += (u32)data[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

static void send_frame(u32 len)
{
	memset(tx, 0, HEADER);
	struct virtio_buf buf = { (u64)tx, HEADER + len, 0 };
	virtq_add(&dev, 1, &buf, 1);
	u16 head;
	u32 used;
	virtq_wait(&dev, 1, &head, &used, SPINS);
}

/* Waits for a frame; returns its Ethernet bytes (after the virtio-net header) or 0. */
static const u8 *receive_frame(u32 *len, u16 *head)
{
	u32 used;
	if (!virtq_wait(&dev, 0, head, &used, SPINS) || used < HEADER + 14)
		return 0;
	*len = used - HEADER;
	return rx[*head] + HEADER;
}

static void ethernet(const u8 *dst, u16 type)
{
	u8 *eth = tx + HEADER;
	memcpy(eth, dst, 6);
	memcpy(eth + 6, my_mac, 6);
	put16(eth + 12, type);
}

static int resolve_peer(void)
{
	static const u8 broadcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	ethernet(broadcast, 0x0806);
	u8 *arp = tx + HEADER + 14;
	put16(arp, 1);		/* Ethernet */
	put16(arp + 2, 0x0800);	/* IPv4 */
	arp[4] = 6;
	arp[5] = 4;
	put16(arp + 6, 1);	/* request */
	memcpy(arp + 8, my_mac, 6);
	memcpy(arp + 14, my_ip, 4);
	memset(arp + 18, 0, 6);
	memcpy(arp + 24, peer_ip, 4);
	send_frame(14 + 28);
	for (int tries = 0; tries < 16; tries++) {
		u32 len;
		u16 head;
		const u8 *frame = receive_frame(&len, &head);
		if (!frame)
			return -1;
		int reply = len >= 42 && get16(frame + 12) == 0x0806 && get16(frame + 20) == 2 &&
			    memcmp(frame + 28, peer_ip, 4) == 0;
		if (reply)
			memcpy(peer_mac, frame + 22, 6);
		virtq_readd(&dev, 0, head);
		if (reply)
			return 0;
	}
	return -1;
}

static int ping_peer(void)
{
	static const char payload[] = "corral virtio-net ping";
	ethernet(peer_mac, 0x0800);
	u8 *ip = tx + HEADER + 14;
	u32 icmp_len = 8 + sizeof(payload);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (u16)(20 + icmp_len));
	ip[8] = 64;		/* TTL */
	ip[9] = 1;		/* ICMP */
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, peer_ip, 4);
	put16(ip + 10, checksum(ip, 20));
	u8 *icmp = ip + 20;
	memset(icmp, 0, 8);
	icmp[0] = 8;		/* echo request */
	put16(icmp + 4, 0x4352);
	put16(icmp + 6, 1);
	memcpy(icmp + 8, payload, sizeof(payload));
	put16(icmp + 2, checksum(icmp, icmp_len));
	send_frame(14 + 20 + icmp_len);
	for (int tries = 0; tries < 16; tries++) {
		u32 len;
		u16 head;
		const u8 *frame = receive_frame(&len, &head);
		if (!frame)
			return -1;
		const u8 *rip = frame + 14;
		int reply = len >= 14 + 20 + icmp_len && get16(frame + 12) == 0x0800 &&
			    rip[9] == 1 && memcmp(rip + 12, peer_ip, 4) == 0 && rip[20] == 0 &&
			    get16(rip + 24) == 0x4352 &&
			    memcmp(rip + 28, payload, sizeof(payload)) == 0;
		virtq_readd(&dev, 0, head);
		if (reply)
			return 0;
	}
	return -1;
}

static void put_mac(const u8 *mac)
{
	for (int i = 0; i < 6; i++) {
		const char *hex = "0123456789abcdef";
		serial_putc(hex[mac[i] >> 4]);
		serial_putc(hex[mac[i] & 15]);
		if (i < 5)
			serial_putc(':');
	}
}

void guest_run(const struct boot_info *boot)
{
	if (virtio_find(boot->cmdline, VIRTIO_ID_NET, 0, &dev) != 0 ||
	    virtio_init(&dev, NET_F_MAC | NET_F_STATUS, 2) != 0 ||
	    parse_ip(boot->cmdline, "guest_ip=", my_ip) != 0 ||
	    parse_ip(boot->cmdline, "peer_ip=", peer_ip) != 0) {
		serial_puts("virtio-net: no device or no guest_ip=/peer_ip= on the command line\n");
		debug_exit(1);
	}
	for (int i = 0; i < 6; i++)
		my_mac[i] = virtio_config8(&dev, (u32)i);
	int link_up = (virtio_config8(&dev, 6) & 1) != 0;
	serial_puts("virtio-net: mac ");
	put_mac(my_mac);
	serial_puts(link_up ? ", link up\n" : ", link down\n");
	/* Receive buffers: one descriptor each, posted once and reposted after use. */
	for (int i = 0; i < RX_BUFFERS; i++) {
		struct virtio_buf buf = { (u64)rx[i], HEADER + FRAME, 1 };
		virtq_add(&dev, 0, &buf, 1);
	}
	if (resolve_peer() != 0) {
		serial_puts("virtio-net: FAILED: no ARP reply from the peer\n");
		debug_exit(1);
	}
	serial_puts("virtio-net: peer is at ");
	put_mac(peer_mac);
	serial_puts("\n");
	if (ping_peer() != 0) {
		serial_puts("virtio-net: FAILED: no echo reply\n");
		debug_exit(1);
	}
	serial_puts("virtio-net: echo reply from the peer\n");
	debug_exit(link_up ? 0 : 1);
}
