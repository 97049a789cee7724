#!/usr/bin/env python3
"""DISCOVER to ACK time of each DHCP exchange a client makes on one interface, on the wire.

Run in the client's network namespace: `dhcp_times.py IFACE OUT`. Captures the interface's DHCP
packets with kernel timestamps (a packet socket sees the client's own DISCOVERs going out) until
SIGTERM, then writes to OUT one line per exchange (matched by the DHCP transaction id): the
milliseconds from the DISCOVER to the ACK, and of those the server's share (DISCOVER to OFFER plus
REQUEST to ACK; the rest is the client's). Exchanges without all four are left out.
"""
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5


def message(frame):
    """(transaction id, DHCP message type) of a DHCP frame, or None."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    if ip[9] != 17:
        return None
    sport, dport = struct.unpack("!HH", ip[header:header + 4])
    if {sport, dport} != {67, 68}:
        return None
    bootp = ip[header + 8:]
    if len(bootp) < 240 or bootp[236:240] != b"\x63\x82\x53\x63":
        return None
    xid = bootp[4:8]
    options, i = bootp[240:], 0
    while i + 1 < len(options) and options[i] != 255:
        if options[i] == 0:
            i += 1
            continue
        code, size = options[i], options[i + 1]
        if code == 53 and size == 1 and i + 2 < len(options):
            return xid, options[i + 2]
        i += 2 + size
    return None


def main():
    iface, out = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    exchanges, times = {}, []
    running = True

    def stop(_signum, _frame):
        nonlocal running
        running = False
        sock.close()

    signal.signal(signal.SIGTERM, stop)
    print("listening", flush=True)
    while running:
        try:
            frame, ancillary, _flags, _address = sock.recvmsg(2048, 64)
        except OSError:
            break
        seen = message(frame)
        if seen is None:
            continue
        stamp = next(
            (struct.unpack("qq", data[:16]) for level, kind, data in ancillary
             if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS),
            None,
        )
        if stamp is None:
            continue
        ns = stamp[0] * 1_000_000_000 + stamp[1]
        xid, kind = seen
        # the first of each kind: a retransmitted DISCOVER or REQUEST does not restart the clock
        seen_at = exchanges.setdefault(xid, {})
        seen_at.setdefault(kind, ns)
        if kind == ACK and all(k in seen_at for k in (DISCOVER, OFFER, REQUEST)):
            total = ns - seen_at[DISCOVER]
            server = seen_at[OFFER] - seen_at[DISCOVER] + ns - seen_at[REQUEST]
            times.append((total / 1e6, server / 1e6))
            del exchanges[xid]
    with open(out, "w") as file:
        file.writelines(f"{total:.3f} {server:.3f}\n" for total, server in times)


if __name__ == "__main__":
    main()
