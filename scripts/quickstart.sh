#!/usr/bin/env bash
# Sets up a fresh Debian host for corral (apt packages, release build installed as the Debian
# package: /usr/bin/corral, completions, man pages, the autostart unit), checks the host, builds
# the Debian 12 image (images/debian-12-container.toml: systemd, OpenSSH, cloud-init) and
# launches the default instances on the default network: a system container from that image,
# configured at first boot by cloud-init from corral's seed (its user `demo` with an SSH key made
# here, its hostname, a message of the day), and a Linux VM (corral's small guest kernel, built
# once and cached, with a busybox shell on its serial console).
# Run again, it reuses what exists. Set CORRAL_ROOT to keep corral's state somewhere other than
# /var/lib/corral; set CORRAL_NO_VM=1 to skip the VM.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
echo "== the corral package (scripts/package.sh), installed"
deb="$(scripts/package.sh --no-lint)"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$(realpath "$deb")" >/dev/null
corral=corral

echo "== corral host check"
"$corral" host check || { echo "this host cannot run instances; see the FAIL lines above" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/corral

echo "== the Debian 12 image (corral image build images/debian-12-container.toml; minutes, once)"
if ! "$corral" image info debian-12 >/dev/null 2>&1; then
  "$corral" image build images/debian-12-container.toml --var out="$cache/image-outputs"
fi
"$corral" image list
echo "== the default instance: demo (a Debian 12 system container, configured by cloud-init)"
mkdir -p "$cache"
key=$cache/demo_ed25519
[ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -C corral-demo -f "$key"
if ! "$corral" info demo >/dev/null 2>&1; then
  "$corral" create demo --image debian-12 --memory 512M --pids-limit 500 \
    --user demo --ssh-key "$key.pub" --user-data scripts/demo-user-data.yaml
fi
if ! "$corral" list | grep -q '^demo '; then
  "$corral" start demo
fi
# systemd runs cloud-init's stages at first boot; the last one leaves cloud-final active.
for _ in $(seq 120); do
  state=$("$corral" exec demo -- systemctl show --property=ActiveState cloud-final.service 2>/dev/null || true)
  case "$state" in *=active | *=failed) break ;; esac
  sleep 1
done
"$corral" exec demo -- cloud-init status || true
"$corral" exec demo -- cat /etc/motd
if [ -z "${CORRAL_NO_VM:-}" ]; then
  echo "== the demo VM: demo-vm (Linux on corral's VMM)"
  guests/linux/build.sh "$cache/guest-linux" >/dev/null
  rootfs=$cache/busybox-rootfs
  [ -x "$rootfs/bin/busybox" ] || scripts/busybox-rootfs.sh "$rootfs"
  initramfs=$cache/demo-initramfs.cpio
  [ "$initramfs" -nt scripts/demo-initramfs.sh ] || scripts/demo-initramfs.sh "$rootfs" "$initramfs"
  if ! "$corral" info demo-vm >/dev/null 2>&1; then
    "$corral" create demo-vm --kernel "$cache/guest-linux/vmlinux" --initrd "$initramfs" \
      --cmdline "$(cat guests/linux/cmdline)" --cpus 2 --memory 256M
  fi
  if ! "$corral" list | grep -q '^demo-vm '; then
    "$corral" start demo-vm
  fi
  if ! grep -qw -e vmx -e svm /proc/cpuinfo; then
    echo "note: without VT-x/AMD-V this host emulates guest kernel code: demo-vm takes about a minute to boot"
  fi
fi

echo "== corral list"
"$corral" list
echo
echo "attach with: $corral console demo   (or demo-vm; Ctrl-] detaches)"
echo "log in:      ssh -i $key demo@ADDRESS   (demo's address: $corral info demo)"
