#!/usr/bin/env bash
# Network benchmark, corral's managed network beside the bare Linux pieces it is built of, in one run:
#   1. TCP throughput (iperf3, one stream) between two application containers on one managed network
#      (veth, bridge, veth, with the nics' anti-spoofing filters), against a bare veth pair between
#      two plain network namespaces
#   2. DHCP lease time: busybox `udhcpc -q` (DISCOVER, OFFER, REQUEST, ACK, then exit) from a client
#      namespace plugged into the network's bridge, against a bare dnsmasq on a bridge of its own;
#      ROUNDS runs each, interleaved, median: DISCOVER to ACK on the wire (kernel timestamps of a
#      packet capture, dhcp_times.py), the server's share of it, and the whole udhcpc process
#   3. instances brought up per second: create + start of N application containers one after the
#      other, each on the network (running with its address when `start` returns), against the same
#      containers without a nic, the two kinds taking turns; the rate is N over the summed times
# Everything runs in network namespaces the script makes (corral itself runs in one, as the
# network tests do): no link or nftables rule of the machine is touched, no packet leaves it.
#
#   bench/network/run.sh [ROUNDS] [N]   (defaults 100 and 20; needs root, iproute2, nftables,
#                                        dnsmasq-base, busybox-static, iperf3)
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-100}"
count="${2:-20}"
seconds=4 # of each iperf3 run; three runs a side
[ "$(id -u)" = 0 ] || { echo "the benchmark makes network namespaces and containers and needs root" >&2; exit 1; }
for tool in ip nft nsenter dnsmasq busybox iperf3 python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

nice -n 10 cargo build --release -q -p corral
corral="$PWD/target/release/corral"
work="$(mktemp -d -t corral-bench-network.XXXXXX)"
# dnsmasq drops its privileges and must reach the network's state directory
chmod 755 "$work"
root="$work/root"
tag="cbn$$"
host="$tag-host" # corral's namespace: the managed network's bridge and the containers' host ends
client="$tag-client" # the DHCP client's
bare="$tag-bare"     # the bare dnsmasq's
va="$tag-va" vb="$tag-vb" # the bare veth pair's ends
pids=()
made=()

# Instances get only the nics named here (no `default` network).
c() { CORRAL_ROOT="$root" CORRAL_DEFAULT_NETWORK=none nsenter --net="/run/netns/$host" -- "$corral" "$@"; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }

cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  for name in "${made[@]}"; do c delete "$name" --force >/dev/null 2>&1; done
  [ -d "$root/networks/bench" ] && c network delete bench >/dev/null
  for ns in "$host" "$client" "$bare" "$va" "$vb"; do
    [ -e "/run/netns/$ns" ] && ip netns del "$ns"
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in "$host" "$client" "$bare" "$va" "$vb"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done

# The containers' root filesystem: busybox, and iperf3 with the libraries it links.
rootfs="$work/rootfs"
scripts/busybox-rootfs.sh "$rootfs"
iperf3=$(command -v iperf3)
cp --parents -L "$iperf3" "$rootfs"
for lib in $(ldd "$iperf3" | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$rootfs"; done

c network create bench --subnet 10.213.0.1/24 --dhcp-range 10.213.0.100-10.213.0.250 --no-nat >/dev/null
bridge=$(c network info bench -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bridge"])')
info() { # instance, python expression on its `corral info -o json` document `i`
  c info "$1" -o json | python3 -c "import json,sys; i=json.load(sys.stdin); print($2)"
}

# 1. TCP throughput
for name in iperf-server iperf-client; do
  made+=("$name")
  if [ "$name" = iperf-server ]; then cmd=("$iperf3" -s); else cmd=(/bin/sleep 3600); fi
  c create "$name" --rootfs "$rootfs" --nic network=bench -- "${cmd[@]}" >/dev/null
  c start "$name" >/dev/null
done
server_ip=$(info iperf-server 'i["nics"][0]["ip"]')
ip -n "$va" link add eth0 type veth peer name eth0 netns "$vb"
ip -n "$va" addr add 10.214.0.1/24 dev eth0
ip -n "$vb" addr add 10.214.0.2/24 dev eth0
ip -n "$va" link set eth0 up
ip -n "$vb" link set eth0 up
nsenter --net="/run/netns/$va" -- "$iperf3" -s >/dev/null 2>&1 &
pids+=($!)
gbits() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'; }
# until both servers answer (a 1 MB transfer; iperf3 takes `-t 0.1` for 0, which is forever)
for try in $(seq 50); do
  c exec iperf-client -- "$iperf3" -c "$server_ip" -n 1M >/dev/null 2>&1 &&
    in_ns "$vb" "$iperf3" -c 10.214.0.1 -n 1M >/dev/null 2>&1 && break
  [ "$try" != 50 ] || { echo "the iperf3 servers do not answer" >&2; exit 1; }
  sleep 0.1
done
: >"$work/tcp-corral"
: >"$work/tcp-veth"
for _ in 1 2 3; do
  c exec iperf-client -- "$iperf3" -c "$server_ip" -t "$seconds" -J | gbits >>"$work/tcp-corral"
  in_ns "$vb" "$iperf3" -c 10.214.0.1 -t "$seconds" -J | gbits >>"$work/tcp-veth"
done

# 2. DHCP lease time: the client's eth0 on corral's bridge, its eth1 on the bare dnsmasq's
ip -n "$host" link add bench-dhcp type veth peer name eth0 netns "$client"
ip -n "$host" link set bench-dhcp master "$bridge" up
ip -n "$bare" link add br0 type bridge
ip -n "$bare" addr add 10.215.0.1/24 dev br0
ip -n "$bare" link set br0 up
ip -n "$bare" link add port0 type veth peer name eth1 netns "$client"
ip -n "$bare" link set port0 master br0 up
ip -n "$client" link set eth0 up
ip -n "$client" link set eth1 up
nsenter --net="/run/netns/$bare" -- dnsmasq --keep-in-foreground --conf-file=/dev/null --no-hosts --port=0 \
  --bind-interfaces --interface=br0 --except-interface=lo --user=root \
  --dhcp-range=10.215.0.100,10.215.0.250,255.255.255.0,1h --dhcp-authoritative \
  --dhcp-leasefile="$work/bare.leases" --log-facility="$work/bare.log" &
pids+=($!)
lease() { # interface: one lease, in ms
  local s e
  s=$(date +%s%N)
  in_ns "$client" busybox udhcpc -i "$1" -q -n -f -t 5 -T 1 -s /bin/true >/dev/null 2>&1 ||
    { echo "udhcpc got no lease on $1" >&2; exit 1; }
  e=$(date +%s%N)
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f\n", (e - s) / 1e6}'
}
# the first lease of each (dnsmasq pings an address before it first offers it) is not counted
lease eth0 >/dev/null
lease eth1 >/dev/null
# DISCOVER to ACK on the wire, beside the whole udhcpc run
sniffers=()
for side in eth0:corral eth1:bare; do
  nsenter --net="/run/netns/$client" -- python3 bench/network/dhcp_times.py "${side%:*}" \
    "$work/wire-${side#*:}" >"$work/sniffer-${side#*:}" &
  sniffers+=($!)
  pids+=($!)
  for _ in $(seq 50); do grep -q listening "$work/sniffer-${side#*:}" && break; sleep 0.1; done
done
: >"$work/dhcp-corral"
: >"$work/dhcp-bare"
for _ in $(seq "$rounds"); do
  lease eth0 >>"$work/dhcp-corral"
  lease eth1 >>"$work/dhcp-bare"
done
for pid in "${sniffers[@]}"; do kill "$pid" && wait "$pid"; done
for side in corral bare; do
  [ "$(wc -l <"$work/wire-$side")" = "$rounds" ] ||
    { echo "the capture saw $(wc -l <"$work/wire-$side") of $rounds exchanges on the $side side" >&2; exit 1; }
done

# 3. instances per second, one after the other, with and without a nic taking turns (so both see
#    the same load of the machine)
up() { # name, create's extra arguments...: wall time in ms of the container's create + start
  local name=$1 s e; shift
  s=$(date +%s%N)
  c create "$name" --rootfs "$rootfs" "$@" -- /bin/sleep 3600 >/dev/null
  c start "$name" >/dev/null
  e=$(date +%s%N)
  echo $(((e - s) / 1000000))
}
plain_ms=0 net_ms=0
for i in $(seq "$count"); do
  made+=("plain$i" "net$i")
  plain_ms=$((plain_ms + $(up "plain$i")))
  net_ms=$((net_ms + $(up "net$i" --nic network=bench)))
done
for i in $(seq "$count"); do
  [ "$(info "net$i" 'i["state"]["status"]')" = running ] || { echo "net$i is not running" >&2; exit 1; }
  [[ "$(info "net$i" 'i["nics"][0]["ip"]')" == 10.213.0.* ]] || { echo "net$i has no address" >&2; exit 1; }
done

median() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f", m}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
tcp_c=$(median <"$work/tcp-corral") tcp_v=$(median <"$work/tcp-veth")
dhcp_c=$(median <"$work/dhcp-corral") dhcp_b=$(median <"$work/dhcp-bare")
wire_c=$(cut -d' ' -f1 "$work/wire-corral" | median) wire_b=$(cut -d' ' -f1 "$work/wire-bare" | median)
server_c=$(cut -d' ' -f2 "$work/wire-corral" | median) server_b=$(cut -d' ' -f2 "$work/wire-bare" | median)
rate_p=$(awk -v n="$count" -v ms="$plain_ms" 'BEGIN {printf "%.1f", n * 1000 / ms}')
rate_n=$(awk -v n="$count" -v ms="$net_ms" 'BEGIN {printf "%.1f", n * 1000 / ms}')

echo "network: $(nproc) cores, $(uname -r); iperf3 3 x ${seconds}s a side, $rounds leases a side, $count instances"
echo
echo "| measure | corral | peer | peer | corral / peer |"
echo "| --- | ---: | --- | ---: | ---: |"
echo "| TCP, container to container (Gbit/s, median) | $tcp_c | bare veth pair | $tcp_v | $(ratio "$tcp_c" "$tcp_v") |"
echo "| DHCP lease, DISCOVER to ACK on the wire (ms, median) | $wire_c | bare dnsmasq | $wire_b | $(ratio "$wire_c" "$wire_b") |"
echo "| ... of which the server's: DISCOVER to OFFER + REQUEST to ACK (ms, median) | $server_c | bare dnsmasq | $server_b | $(ratio "$server_c" "$server_b") |"
echo "| DHCP lease, whole \`udhcpc -q\` run (ms, median) | $dhcp_c | bare dnsmasq | $dhcp_b | $(ratio "$dhcp_c" "$dhcp_b") |"
echo "| instances up on the network (per s) | $rate_n | same without a nic | $rate_p | $(ratio "$rate_n" "$rate_p") |"
echo
echo "TCP runs (Gbit/s): corral $(paste -sd' ' "$work/tcp-corral"); veth $(paste -sd' ' "$work/tcp-veth")"
range() { echo "$(cut -d' ' -f1 "$1" | sort -g | head -1) to $(cut -d' ' -f1 "$1" | sort -g | tail -1)"; }
echo "DHCP on the wire (ms): corral $(range "$work/wire-corral"), bare $(range "$work/wire-bare");" \
  "udhcpc runs: corral $(range "$work/dhcp-corral"), bare $(range "$work/dhcp-bare")"
echo "instances: $count on the network in $net_ms ms, $count without a nic in $plain_ms ms (summed)"
