#!/usr/bin/env bash
# Emulated Raspberry Pi OS check: install this checkout the way docs/raspberry-pi.md says, inside a
# Debian bookworm root (what Raspberry Pi OS is built on) run under qemu-user-static, classify real
# photos and FER2013 faces there, and compare every record with the same run on this x86 machine.
#
#   deploy/test-pi-os.sh arm64|armhf [--build-only]
#
# Needs root (debootstrap, chroot, bind mounts) and a network that reaches deb.debian.org and PyPI.
# Installs debootstrap, qemu-user-static and binfmt-support with apt-get when they are missing.
# The root is built once (about 10 minutes) and cached in $EDGEEMO_PI_OS_CACHE
# (default /var/cache/edgeemo-pi-os); the install and the runs take another 5-15 minutes.
#
# Environment:
#   EDGEEMO_PI_OS_CACHE  where the bookworm roots are kept
#   EDGEEMO_DATA         the data folder (default: ../shared/data beside the checkout)
#   EDGEEMO_PI_OS_OUT    where the records and the comparison go (default /tmp/edgeemo-pi-os/ARCH)
#   EDGEEMO_X86_PYTHON   the x86 Python with edgeemo installed (default: the checkout's .venv)
#   EDGEEMO_PI_OS_FACES  FER2013 val/ faces per class to compare (default 15)
#
# Two emulation artifacts are worked around here; neither is a product bug:
#   - qemu-user shows the host's x86 /proc/cpuinfo, on which LiteRT's arm64 CPU probe crashes:
#     a Raspberry Pi 4's cpuinfo (deploy/pi-os/) is bind-mounted over it;
#   - qemu's default "max" CPU makes XNNPACK's newest int8 kernels return one constant answer:
#     QEMU_CPU is set to the Pi 4's core (cortex-a72; cortex-a15 for 32-bit, qemu-arm has no a72).
# Timings under emulation mean nothing; only the answers are compared.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=${1:-}
build_only=0
[[ ${2:-} == --build-only ]] && build_only=1
case "$arch" in
    arm64) qarch=aarch64; qcpu=cortex-a72 ;;
    armhf) qarch=arm; qcpu=cortex-a15 ;;
    *) echo "usage: $0 arm64|armhf [--build-only]" >&2; exit 2 ;;
esac
[[ $(id -u) == 0 ]] || { echo "$0: needs root (debootstrap, chroot and bind mounts); run it with sudo" >&2; exit 2; }

cache=${EDGEEMO_PI_OS_CACHE:-/var/cache/edgeemo-pi-os}
data=${EDGEEMO_DATA:-$repo/../shared/data}
out=${EDGEEMO_PI_OS_OUT:-/tmp/edgeemo-pi-os/$arch}
x86py=${EDGEEMO_X86_PYTHON:-$repo/.venv/bin/python}
per_class=${EDGEEMO_PI_OS_FACES:-15}
root=$cache/bookworm-$arch
mirror=http://deb.debian.org/debian

say() { printf '[test-pi-os %s] %s\n' "$arch" "$*" >&2; }

# --- host tools -------------------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v "qemu-$qarch-static" >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if ((${#need[@]})); then
    say "installing ${need[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable "qemu-$qarch" >/dev/null 2>&1 || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-$qarch ]] || {
    echo "$0: qemu-$qarch is not registered with binfmt_misc; 'update-binfmts --display qemu-$qarch' tells why" >&2
    exit 1
}

# --- the root, built once ---------------------------------------------------------------------
copy_qemu() {  # binfmt entries without the F flag look for the interpreter inside the root
    local r=$1 link
    link=$(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/qemu-$qarch")
    install -D -m 755 "/usr/bin/qemu-$qarch-static" "$r/usr/bin/qemu-$qarch-static"
    if [[ -n $link && $link != /usr/bin/qemu-$qarch-static ]]; then
        mkdir -p "$r$(dirname "$link")"
        ln -sf "/usr/bin/qemu-$qarch-static" "$r$link"
    fi
}

if [[ ! -e $root/.edgeemo-built ]]; then
    say "building a bookworm $arch root in $root (about 10 minutes, once)"
    rm -rf "$root.tmp"
    mkdir -p "$cache"
    debootstrap --arch="$arch" --foreign --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$root.tmp" "$mirror" >&2
    copy_qemu "$root.tmp"
    QEMU_CPU=$qcpu chroot "$root.tmp" /debootstrap/debootstrap --second-stage >&2
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" \
        >"$root.tmp/etc/apt/sources.list"
    touch "$root.tmp/.edgeemo-built"
    mv "$root.tmp" "$root"
    say "root ready"
fi
copy_qemu "$root"
((build_only)) && exit 0
