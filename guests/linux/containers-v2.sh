#!/bin/busybox sh
# Init of the pure cgroup v2 guest (crates/corral/tests/guest_containers.rs): the kernel boots
# with `cgroup_no_v1=all`; this script mounts cgroup2 on /sys/fs/cgroup, runs corral's container
# engine through the scenarios below, prints one line per check
#   v2 NAME: ok DETAIL      or      v2 NAME: FAIL WHY
# and reboots (the VMM ends the run). The root disk holds busybox, corral with its libraries, a
# busybox root filesystem for the containers (/rootfs, read-only to them) and their OCI bundles
# (/bundles/NAME/config.json, made by the host test).
#
# A fork+exec costs seconds in this guest (its kernel runs in the host's instruction emulator),
# a corral command tens of seconds: files are read with the shell's own `read`, and one container
# serves every check it can.
export PATH=/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Programs read from the disk while they start are what this host's emulator now and then
# corrupts (guests/linux/README.md): read them all into the page cache first (`warm` is the
# test guest's init.c under another name).
warm /bin/busybox /bin/corral /bin/cp /lib/x86_64-linux-gnu /lib64 /rootfs/bin/busybox
read -r controllers </sys/fs/cgroup/cgroup.controllers
echo "v2 setup: cgroup2 controllers: $controllers"

# Sets $now to the seconds since boot.
uptime_now() {
	read -r now _ </proc/uptime
	now=${now%.*}
}

# True once file $1 has a line containing $2 (checked with the shell alone, no process).
file_has() {
	while IFS= read -r line; do
		case $line in *"$2"*) return 0 ;; esac
	done <"$1"
	return 1
}

result() { # NAME STATUS DETAIL
	echo "v2 $1: $2 $3"
}

# Sets $value to the first line of file $1, or to "" when it cannot be read.
first_line() {
	value=
	read -r value <"$1" 2>/dev/null
}

# Sets $value to the rest of the line of file $1 that starts with "$2 " (a keyed cgroup file).
keyed() {
	value=
	while read -r key rest; do
		[ "$key" = "$2" ] && { value=$rest; return; }
	done <"$1"
}

# Sets $status and $pid from `corral oci state $1` (both "" when it fails).
oci_state() {
	status= pid=
	corral oci state "$1" >/tmp/state.json 2>/dev/null || return 1
	while read -r key rest; do
		rest=${rest%,}
		rest=${rest#\"}
		rest=${rest%\"}
		case $key in
		'"status":') status=$rest ;;
		'"pid":') pid=$rest ;;
		esac
	done </tmp/state.json
}

# Waits up to 60 s for the instance $1's supervisor to record how its run ended.
wait_exit_record() {
	uptime_now
	deadline=$((now + 60))
	until [ -e "/var/lib/corral/instances/$1/run/exit.json" ]; do
		uptime_now
		[ "$now" -le "$deadline" ] || return 1
		sleep 1
	done
}

# --- One OCI container: lifecycle, cgroup namespace, device filter, pids, cpu.max, freezing ---
# Its process (bundles/checks) prints what it sees from inside, runs a shell that forks 20
# sleepers under a pids limit of 8, then spins on the CPU under a 20 ms / 100 ms quota.
if corral oci create --bundle /bundles/checks c1 </dev/null >/tmp/c1.out 2>&1; then
	oci_state c1
	created=$status
	corral oci start c1 >>/tmp/c1.out 2>&1
	oci_state c1
	running=$status
	cg=/sys/fs/cgroup
	first_line "/proc/$pid/cgroup"
	cg=/sys/fs/cgroup${value#0::}
	# The process says "spinning" once its checks and forks are done (at most a minute).
	uptime_now
	deadline=$((now + 60))
	until file_has /tmp/c1.out spinning || [ "$now" -gt "$deadline" ]; do
		sleep 1
		uptime_now
	done
	sleep 1
	inside=$(tr '\n' ' ' </tmp/c1.out)

	case "$inside" in
	*"cgroup 0::/ "*) result cgroupns ok "inside: $inside" ;;
	*) result cgroupns FAIL "inside: $inside" ;;
	esac
	case "$inside" in
	*"vda visible"*"Operation not permitted"*"null ok"*) result devices ok "inside: $inside" ;;
	*) result devices FAIL "inside: $inside" ;;
	esac

	first_line "$cg/pids.max"
	pids_max=$value
	first_line "$cg/pids.current"
	pids_current=$value
	keyed "$cg/pids.events" max
	refused=$value
	if [ "$pids_max" = 8 ] && [ "${pids_current:-99}" -le 8 ] && [ "${refused:-0}" -gt 0 ]; then
		result pids ok "pids.max $pids_max, pids.current $pids_current, $refused forks refused"
	else
		result pids FAIL "pids.max '$pids_max', pids.current '$pids_current', refused '$refused'"
	fi

	first_line "$cg/cpu.max"
	cpu_max=$value
	keyed "$cg/cpu.stat" nr_throttled
	throttled=$value
	if [ "$cpu_max" = "20000 100000" ] && [ "${throttled:-0}" -gt 0 ]; then
		result cpu ok "cpu.max $cpu_max, throttled $throttled times"
	else
		result cpu FAIL "cpu.max '$cpu_max', nr_throttled '$throttled'"
	fi

	corral oci pause c1 >>/tmp/c1.out 2>&1
	oci_state c1
	paused=$status
	keyed "$cg/cgroup.events" frozen
	frozen=$value
	corral oci resume c1 >>/tmp/c1.out 2>&1
	keyed "$cg/cgroup.events" frozen
	thawed=$value
	if [ "$paused" = paused ] && [ "$frozen" = 1 ] && [ "$thawed" = 0 ]; then
		result freeze ok "paused: frozen $frozen; resumed: frozen $thawed"
	else
		result freeze FAIL "state '$paused', frozen '$frozen' then '$thawed': $(tr '\n' ' ' </tmp/c1.out)"
	fi

	corral oci kill c1 KILL >>/tmp/c1.out 2>&1
	i=0
	while oci_state c1 && [ "$status" != stopped ] && [ $i -lt 10 ]; do
		i=$((i + 1))
		sleep 0.5
	done
	killed=$status
	corral oci delete c1 >>/tmp/c1.out 2>&1
	if oci_state c1; then gone=no; else gone=yes; fi
	if [ "$created" = created ] && [ "$running" = running ] && [ "$killed" = stopped ] && [ $gone = yes ]; then
		result lifecycle ok "created, running, stopped, deleted"
	else
		result lifecycle FAIL "'$created', '$running', '$killed', gone $gone: $(tr '\n' ' ' </tmp/c1.out)"
	fi
else
	why=$(tr '\n' ' ' </tmp/c1.out)
	for name in cgroupns devices pids cpu freeze lifecycle; do
		result $name FAIL "create: $why"
	done
fi

# --- The instance layer: a memory limit ends in an OOM kill that corral reports ---
# A 16 MiB container reading 48 MiB into one buffer. $2, when given, arms failpoints in the
# supervisor (FAILPOINTS): with corral's memory.max write skipped the check must fail.
memory() { # NAME [FAILPOINTS]
	if ! env ${2:+FAILPOINTS=$2} corral create "$1" --rootfs /rootfs --memory 16M --userns host \
		--default-network none --start -- dd if=/dev/zero of=/dev/null bs=48M count=1 \
		>/tmp/$1.out 2>&1; then
		result "$3" FAIL "create: $(tr '\n' ' ' </tmp/$1.out)"
		return
	fi
	wait_exit_record "$1"
	exit_line=$(corral info "$1" | grep -i 'exit')
	case "$exit_line" in
	*"out of memory"*) result "$3" ok "$exit_line" ;;
	*) result "$3" FAIL "not OOM-killed: $exit_line" ;;
	esac
}
memory memhog "" memory
# Proof the check can fail: the same container with corral's memory.max write skipped.
memory broken inject.cgroup-v2-skip-memory-max=return memory-without-memory.max

# --- A system container's cgroup is delegated: it moves its processes to a leaf, enables pids
# for its children and limits a child cgroup of its own ---
if corral create system --rootfs /rootfs --init --default-network none --start -- sleep 1000 \
	>/tmp/system.out 2>&1 &&
	corral exec system -- sh -c '
		cd /sys/fs/cgroup && mkdir init child &&
		for pid in $(cat cgroup.procs); do echo $pid > init/cgroup.procs; done &&
		echo +pids > cgroup.subtree_control &&
		echo 4 > child/pids.max &&
		echo "$(cat /proc/self/cgroup); child controllers: $(cat child/cgroup.controllers); child pids.max: $(cat child/pids.max)"' \
		>>/tmp/system.out 2>&1 &&
	grep -q 'child controllers: .*pids' /tmp/system.out; then
	result delegation ok "$(tr '\n' ' ' </tmp/system.out)"
else
	result delegation FAIL "$(tr '\n' ' ' </tmp/system.out)"
fi

echo "v2 done"
sync
reboot -f
