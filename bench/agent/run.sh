#!/usr/bin/env bash
# Guest agent benchmark: what `corral exec` and `corral file push|pull` cost through the agent,
# against the same over ssh, in one run:
#   1. a busybox system container running both `corral guest agent` (its unix socket) and
#      dropbear (sshd) on a bridge in a network namespace of the script's:
#      - exec round trip: `corral exec --agent box -- true` against `ssh root@box true` (a new
#        connection each time, as the agent's exec is) and against ssh over one shared master
#        connection (ControlMaster: no key exchange), ROUNDS each, median of the whole command;
#      - file transfer of a 100 MiB file into the container's /tmp and back: `corral file push`
#        and `pull` against `ssh ... 'cat >FILE'` and `ssh ... cat FILE` (scp's data path without
#        needing an scp on the server), best of three, MiB/s;
#   2. the same agent in a VM over virtio-vsock (KVM and a cached guest kernel: the Linux
#      test guest with the static corral on a tools disk; skipped, with the reason, otherwise):
#      the exec round trip and the 100 MiB push and pull.
# Both sides are the static release corral (scripts/build-static.sh --release), host and guest.
#
#   bench/agent/run.sh [ROUNDS]   (default 50; needs root, busybox-static, dropbear-bin,
#                                  openssh-client, iproute2; KVM and e2fsprogs for the VM part)
# VM_WAIT=SECONDS (default 300) is how long the VM's agent may take to answer after its start.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-50}"
vm_wait="${VM_WAIT:-300}"
size_mib=100
[ "$(id -u)" = 0 ] || { echo "the benchmark makes a network namespace and containers and needs root" >&2; exit 1; }
for tool in ip nsenter busybox dropbear dropbearkey ssh ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

corral="$PWD/$(nice -n 10 bash scripts/build-static.sh --release)"
work="$(mktemp -d -t corral-bench-agent.XXXXXX)"
root="$work/root"
ns="cba$$"
made=()

c() { CORRAL_ROOT="$root" CORRAL_DEFAULT_NETWORK=none nsenter --net="/run/netns/$ns" -- "$corral" "$@"; }
in_ns() { nsenter --net="/run/netns/$ns" -- "$@"; }

cleanup() {
  set +e
  for name in "${made[@]}"; do c delete "$name" --force >/dev/null 2>&1; done
  [ -e "/run/netns/$ns" ] && ip netns del "$ns"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# ms_of CMD...: one run's wall time in ms (the command's output discarded, its failure fatal)
ms_of() {
  local start end
  start=$(now_ns)
  "$@" >/dev/null </dev/null
  end=$(now_ns)
  echo $(((end - start) / 1000))
}
# round_trip CMD...: the median of ROUNDS runs, in ms with a decimal
round_trip() {
  local i
  for ((i = 0; i < rounds; i++)); do ms_of "$@"; done | median | awk '{printf "%.2f", $1 / 1000}'
}
# mib_per_s SECONDS_NS: the transfer rate of the test file
rate() { awk -v ns="$1" -v mib="$size_mib" 'BEGIN {printf "%.0f", mib / (ns / 1e9)}'; }
# best_ns CMD...: the fastest of three runs, in ns
best_ns() {
  local i start end best=0
  for i in 1 2 3; do
    start=$(now_ns)
    "$@"
    end=$(now_ns)
    if [ "$best" = 0 ] || [ $((end - start)) -lt "$best" ]; then best=$((end - start)); fi
  done
  echo "$best"
}

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" address add 10.213.7.1/24 dev br0
ip -n "$ns" link set br0 up

big="$work/big.bin"
head -c "$((size_mib << 20))" /dev/urandom >"$big"

# 1. the container: busybox, dropbear with the libraries it links, the agent from its inittab
rootfs="$work/rootfs"
scripts/busybox-rootfs.sh "$rootfs" >/dev/null
dropbear=$(command -v dropbear)
cp --parents -L "$dropbear" "$rootfs"
for lib in $(ldd "$dropbear" | grep -o '/[^ ]*'); do cp --parents -L "$lib" "$rootfs"; done
mkdir -p "$rootfs/etc/dropbear" "$rootfs/root/.ssh"
dropbearkey -t ed25519 -f "$rootfs/etc/dropbear/host_key" >/dev/null 2>&1
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
cp "$work/key.pub" "$rootfs/root/.ssh/authorized_keys"
chmod 700 "$rootfs/root" "$rootfs/root/.ssh"
printf '/bin/sh\n' >"$rootfs/etc/shells"
# A system container's init sets its own address (corral sets an application container's).
cat >"$rootfs/etc/inittab" <<TAB
::sysinit:/bin/hostname -F /etc/hostname
::sysinit:/bin/ip link set eth0 up
::sysinit:/bin/ip address add 10.213.7.2/24 dev eth0
::respawn:$dropbear -F -E -s -r /etc/dropbear/host_key -p 22
TAB
"$corral" guest install-agent --root "$rootfs" >/dev/null 2>&1
c create box --init --rootfs "$rootfs" --nic bridge=br0,ip=10.213.7.2/24 -- /sbin/init >/dev/null
made+=(box)
c start box >/dev/null
ssh_opts=(-i "$work/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=2)
for _ in $(seq 50); do
  c agent ping box >/dev/null 2>&1 && in_ns ssh "${ssh_opts[@]}" root@10.213.7.2 true 2>/dev/null && break
  sleep 0.2
done
c agent ping box >/dev/null
in_ns ssh "${ssh_opts[@]}" root@10.213.7.2 true

agent_exec=$(round_trip c exec --agent box -- true)
ssh_exec=$(round_trip in_ns ssh "${ssh_opts[@]}" root@10.213.7.2 true)
master=("${ssh_opts[@]}" -o ControlMaster=auto -o "ControlPath=$work/ssh-master" -o ControlPersist=60)
in_ns ssh "${master[@]}" root@10.213.7.2 true
ssh_mux_exec=$(round_trip in_ns ssh "${master[@]}" root@10.213.7.2 true)
in_ns ssh "${master[@]}" -O exit root@10.213.7.2 2>/dev/null || true

push() { c file push box "$big" /tmp/agent.bin >/dev/null; }
pull() { c file pull box /tmp/agent.bin "$work/agent-back.bin" >/dev/null; }
ssh_push() { in_ns ssh "${ssh_opts[@]}" root@10.213.7.2 'cat >/tmp/ssh.bin' <"$big"; }
ssh_pull() { in_ns ssh "${ssh_opts[@]}" root@10.213.7.2 cat /tmp/ssh.bin >"$work/ssh-back.bin"; }
agent_push=$(rate "$(best_ns push)")
agent_pull=$(rate "$(best_ns pull)")
ssh_push_rate=$(rate "$(best_ns ssh_push)")
ssh_pull_rate=$(rate "$(best_ns ssh_pull)")
cmp "$big" "$work/agent-back.bin"
cmp "$big" "$work/ssh-back.bin"
c kill box >/dev/null

echo "agent: $rounds rounds of exec (median), a $size_mib MiB file (best of 3); $(nproc) cores"
echo
echo "| system container | exec \`true\` (ms) | push (MiB/s) | pull (MiB/s) |"
echo "| --- | ---: | ---: | ---: |"
echo "| corral agent (unix socket) | $agent_exec | $agent_push | $agent_pull |"
echo "| ssh (dropbear), new connection each | $ssh_exec | $ssh_push_rate | $ssh_pull_rate |"
echo "| ssh, one master connection | $ssh_mux_exec | | |"
echo
# 2. the agent in a VM over vsock
vm_note=""
guest_kernel() {
  [ -c /dev/kvm ] || { vm_note="no /dev/kvm"; return 1; }
  command -v mkfs.ext4 >/dev/null || { vm_note="no mkfs.ext4"; return 1; }
  bash guests/linux/build.sh "$work/guest" >/dev/null 2>&1 ||
    { vm_note="the guest kernel did not build (guests/linux/build.sh)"; return 1; }
}
if guest_kernel; then
  tools="$work/tools"
  mkdir -p "$tools/bin"
  cp /bin/busybox "$tools/bin/busybox"
  for applet in true cat; do ln -s busybox "$tools/bin/$applet"; done
  cp "$corral" "$tools/corral"
  mkfs.ext4 -q -d "$tools" "$work/tools.ext4" 128M
  c create vm --kernel "$work/guest/vmlinux" --initrd "$work/guest/initramfs.cpio" \
    --cmdline "$(cat guests/linux/cmdline) corral_agent=vda" --cpus 2 --memory 512M \
    --on-reboot destroy --disk "$work/tools.ext4,format=raw,ro" >/dev/null
  made+=(vm)
  c start vm >/dev/null
  for _ in $(seq "$vm_wait"); do c agent ping vm >/dev/null 2>&1 && break; sleep 1; done
  if ! c agent ping vm >/dev/null 2>&1; then
    echo "VM part failed: the agent did not answer within $vm_wait s; the console ends with:"
    tail -15 "$root/instances/vm/run/console.log"
    exit 1
  fi
  vm_exec=$(round_trip c exec vm -- true)
  vm_push() { c file push vm "$big" /tmp/agent.bin >/dev/null; }
  vm_pull() { c file pull vm /tmp/agent.bin "$work/vm-back.bin" >/dev/null; }
  vm_push_rate=$(rate "$(best_ns vm_push)")
  vm_pull_rate=$(rate "$(best_ns vm_pull)")
  cmp "$big" "$work/vm-back.bin"
  c kill vm >/dev/null
fi

if [ -n "${vm_exec:-}" ]; then
  echo "| VM (Linux test guest) | exec \`true\` (ms) | push (MiB/s) | pull (MiB/s) |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| corral agent (virtio-vsock) | $vm_exec | $vm_push_rate | $vm_pull_rate |"
else
  echo "VM part skipped: $vm_note"
fi
