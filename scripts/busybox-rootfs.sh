#!/usr/bin/env bash
# Builds a minimal busybox root filesystem (Debian's busybox-static) at DIR, for the quickstart's
# default container. Usage: scripts/busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: $0 DIR}
busybox=/bin/busybox
[ -x "$busybox" ] || { echo "needs $busybox: apt-get install busybox-static" >&2; exit 1; }
mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,root,run,var/log}
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
done
ln -sf ../bin/busybox "$dir/sbin/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$dir/etc/passwd"
printf 'root:x:0:\n' > "$dir/etc/group"
# busybox init: a shell on the console, clean shutdown on poweroff/reboot.
cat > "$dir/etc/inittab" <<'TAB'
::sysinit:/bin/hostname -F /etc/hostname
::respawn:-/bin/sh
::shutdown:/bin/echo "corral demo: shutting down"
TAB
echo corral-demo > "$dir/etc/hostname"
