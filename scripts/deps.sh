#!/usr/bin/env bash
# Installs what corral's build, tests and benchmarks need on a Debian/Ubuntu host. Idempotent:
# packages already present are not touched, and apt is not called at all when nothing is missing.
set -euo pipefail

packages=(
  build-essential   # gcc/as/ld for the freestanding test guests
  pkg-config
  iproute2          # ip netns / link for network tests
  nftables          # nft: networks' NAT and port forwards, per-nic anti-spoofing filters
  linux-source-6.1  # the real-Linux VMM test guest (guests/linux/build.sh)
  flex              # ... and the tools its kernel build needs
  bison
  bc
  libelf-dev
  libssl-dev
  cpio              # the test guest's initramfs
  qemu-system-x86   # bench/vmm-start compares corral with qemu -M microvm
  qemu-utils        # qemu-img/qemu-io: corral-disk's tests check qcow2 interoperability
  e2fsprogs         # mkfs.ext4 -d / debugfs / e2fsck / tune2fs: test disks; corral sysprep edits ext4 disks
  xfsprogs          # mkfs.xfs: reflink tests on a loop-mounted XFS (the root fs here is ext4)
  squashfs-tools-ng # gensquashfs/sqfs2tar: split Incus images with a squashfs root filesystem
  openssh-client    # ssh-keygen: sysprep's new SSH host keys
  fdisk             # sfdisk: corral-image's tests partition disks (MBR, GPT) to find kernels in
  libseccomp-dev    # corral-container compiles seccomp profiles with libseccomp (its .a: scripts/build-static.sh)
  file              # scripts/build-static.sh and the static agent's test check the binary is static
  valgrind          # scripts/build-static.sh --vmm lists the functions a VM runs (callgrind) to lay them out first
  busybox-static    # the container tests build their rootfs from /bin/busybox
  lintian           # Debian's package checker: scripts/package.sh checks the .deb it builds
  dnsmasq-base      # DHCP and DNS of corral networks (corral-netservice), without a system service
  isc-dhcp-client   # dhclient: a second real DHCP client in the network tests
  bind9-dnsutils    # dig: the network tests' DNS queries
  iperf3            # bench/network: TCP throughput between containers and over a bare veth pair
  dropbear-bin      # bench/agent: the sshd in the container the guest agent is compared with
  mmdebstrap        # corral image build: Debian sources (images/debian-12-*.toml)
  podman            # tests drive corral as podman's OCI runtime
  umoci             # corral-image tests import umoci-built OCI images and compare with umoci unpack
  conmon            # podman's container monitor (the runtime's caller)
  runc              # bench/container-lifecycle compares against runc
  criu              # checkpoint/restore of running containers (corral oci checkpoint, snapshots); `criu check` decides
  crun              # ... and crun, where it runs (not on hybrid cgroup hosts)
  dosfstools        # fsck.fat: the cloud-init seed tests check corral's CIDATA vfat images
  mtools            # mdir/mtype: ... and list and read them without mounting
  cloud-image-utils # cloud-localds: ... and compare them with the reference seed writer
  genisoimage       # writes ISO 9660 seeds (seed_format = "iso"); isoinfo checks them
  libarchive-tools  # bsdtar: the seed tests read ISO images without mounting
  libxml2-utils     # xmllint: the OVF export tests validate envelopes against the DMTF schema
  prometheus        # promtool: the API tests check /1.0/metrics with Prometheus's own linter
  curl              # the API tests call the socket as another user, and the TLS listener
  openssl           # ... with client certificates openssl makes
  chromium          # the web UI's test runs it headless ...
  chromium-driver   # ... through chromedriver (WebDriver)
)

if ! command -v cargo >/dev/null; then
  echo "corral needs a Rust toolchain (cargo); install it with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
updated=""
# Twice: installing one package can remove another the host had in a conflicting version; the
# second round puts back the matching one.
for round in 1 2; do
  missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  ((${#missing[@]})) || break
  echo "installing: ${missing[*]}"
  [ -n "$updated" ] || $sudo apt-get update -qq
  updated=yes
  # Some hosts come with a backported qemu-utils whose source is not configured; it breaks
  # Debian's qemu-system-x86, so both are taken at the version the archive offers.
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    qemu=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
    without_utils=()
    for package in "${missing[@]}"; do
      [ "$package" = qemu-utils ] || without_utils+=("$package")
    done
    missing=("${without_utils[@]}" "qemu-utils=$qemu")
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${missing[@]}" >/dev/null
done

# schemathesis (PyPI), which the API test runs against the OpenAPI document: a pinned version in
# a virtual environment under the XDG cache (scripts/test.sh puts it on PATH). Without Python the
# test says it skipped.
. "$(dirname "$0")/schemathesis.env"
venv="$schemathesis_venv"
if [ ! -x "$venv/bin/st" ]; then
  if python3 -m venv "$venv" >/dev/null 2>&1 &&
     "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"; then
    echo "installed schemathesis $schemathesis_version in $venv"
  else
    rm -rf "$venv"
    echo "schemathesis could not be installed (python3 -m venv and pip); its API test will skip" >&2
  fi
fi

if command -v rustup >/dev/null && ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  rustup component add clippy rustfmt
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
