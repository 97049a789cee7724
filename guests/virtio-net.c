/*
 * Talks to a peer over virtio-net: reads its MAC from the device, resolves the peer's address with
 * ARP and pings it (ICMP echo). Addresses come from the command line: `guest_ip=10.0.0.2
 * peer_ip=10.0.0.1`. Exits 0 when the echo reply arrived, 1 otherwise.
 */
#include "common/net.h"

void guest_run(const struct boot_info *boot)
{
	u8 peer_ip[4], peer_mac[6];
	int link = net_init(boot->cmdline);
	if (link < 0 || cmdline_ip(boot->cmdline, "guest_ip=", net_ip) != 0 ||
	    cmdline_ip(boot->cmdline, "peer_ip=", peer_ip) != 0) {
		serial_puts("virtio-net: no device or no guest_ip=/peer_ip= on the command line\n");
		debug_exit(1);
	}
	serial_puts("virtio-net: mac ");
	serial_put_mac(net_mac);
	serial_puts(link ? ", link up\n" : ", link down\n");
	if (net_arp_resolve(peer_ip, peer_mac) != 0) {
		serial_puts("virtio-net: FAILED: no ARP reply from the peer\n");
		debug_exit(1);
	}
	serial_puts("virtio-net: peer is at ");
	serial_put_mac(peer_mac);
	serial_puts("\n");
	if (net_ping(peer_ip, peer_mac) != 0) {
		serial_puts("virtio-net: FAILED: no echo reply\n");
		debug_exit(1);
	}
	serial_puts("virtio-net: echo reply from the peer\n");
	debug_exit(link ? 0 : 1);
}
