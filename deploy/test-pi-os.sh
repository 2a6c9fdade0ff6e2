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
#   EDGEEMO_PI_OS_FACES  FER2013 val/ faces per class to compare (default 30)
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
per_class=${EDGEEMO_PI_OS_FACES:-30}
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

# --- the checkout, the data and the mounts -----------------------------------------------------
[[ -d $data/scenes && -d $data/fer2013/val ]] || { echo "$0: $data has no scenes/ or fer2013/val/ (set EDGEEMO_DATA)" >&2; exit 2; }
[[ -x $x86py ]] || { echo "$0: $x86py not found: make the checkout's venv (README) or set EDGEEMO_X86_PYTHON" >&2; exit 2; }
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() {  # SRC DEST [ro]
    if [[ -f $1 ]]; then [[ -e $2 ]] || touch "$2"; else mkdir -p "$2"; fi
    mount --bind "$1" "$2"; mounted+=("$2")
    [[ ${3:-} == ro ]] && mount -o remount,bind,ro "$2"
    return 0
}
mount -t proc proc "$root/proc"; mounted+=("$root/proc")
bind "$here/pi-os/cpuinfo-pi4-$arch" "$root/proc/cpuinfo"
bind /dev "$root/dev"
bind "$data" "$root/root/shared/data" ro
cp /etc/resolv.conf "$root/etc/resolv.conf"
# this machine's CA bundle, for pip inside the root: a network whose TLS proxy has its own CA needs it
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/host-ca-certificates.crt"

# the checkout as a clone has it (tracked files and new ones git does not ignore), at /root/edgeemo, so that
# the README's ../shared/data is the data
rm -rf "$root/root/edgeemo" "$root/root/faces" "$root/root/out"
mkdir -p "$root/root/edgeemo" "$root/root/faces" "$root/root/out"
(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$root/root/edgeemo"
# FER2013 val/ faces, the first per_class of each class, flat and uniquely named
for d in "$data"/fer2013/val/*/; do
    c=$(basename "$d")
    mapfile -t files < <(find "$d" -maxdepth 1 -name '*.jpg' | sort)
    for f in "${files[@]:0:per_class}"; do cp "$f" "$root/root/faces/${c}__$(basename "$f")"; done
done
rm -rf "$out"; mkdir -p "$out"

# --- inside the emulated Pi OS ----------------------------------------------------------------
if [[ $arch == arm64 ]]; then
    install_cmd=$(grep -m1 '^    python3 -m venv .venv && .venv/bin/pip install \. ' "$repo/README.md")
else
    install_cmd=$(grep -m1 -e '--system-site-packages .venv' "$repo/docs/raspberry-pi.md")
fi
[[ -n $install_cmd ]] || { echo "$0: the install command was not found in the README or docs/raspberry-pi.md" >&2; exit 1; }
install_cmd=${install_cmd#    }
say "install and classify, as documented: $install_cmd"
cat >"$root/root/steps.sh" <<STEPS
set -euo pipefail
sudo() { "\$@"; }                      # the documented commands say sudo; here we are root already
cd /root/edgeemo
rm -rf .venv results
echo "== uname -m: \$(uname -m); \$(python3 -V)"
start=\$(date +%s)
$install_cmd || { echo "== FAILED: the documented command exited with status \$?"; exit 1; }
echo "== installed and classified in \$((\$(date +%s) - start)) s (emulated: times mean nothing)"
cp results/results.jsonl /root/out/scenes.jsonl
.venv/bin/edgeemo classify /root/faces --detector none --out /root/out/faces
.venv/bin/edgeemo info
(cd / && /root/edgeemo/.venv/bin/python -c 'import cv2, edgeemo.runtime as r, edgeemo.detect as d; det = d.make_detector("auto"); print("== OpenCV", cv2.__version__, "| runtime", r.interpreter_class()[0], "| detector", det.name, getattr(det, "engine", ""), det.model_path)')
echo "== deploy/install.sh in a root without systemd"
[[ -e /opt/edgeemo ]] && deploy/install.sh --uninstall --purge >/dev/null     # a run stopped half-way
deploy/install.sh
/opt/edgeemo/venv/bin/edgeemo info >/root/out/installed-info.txt
sed -n 1,3p /root/out/installed-info.txt
ls -l /etc/systemd/system/edgeemo*.service /etc/systemd/system/multi-user.target.wants/
echo "== deploy/install.sh --uninstall --purge"
deploy/install.sh --uninstall --purge
[[ ! -e /opt/edgeemo && ! -e /etc/systemd/system/edgeemo.service ]]
echo "== steps done"
STEPS
env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    QEMU_CPU="$qcpu" PIP_CERT=/etc/ssl/host-ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    chroot "$root" /bin/bash /root/steps.sh 2>&1 | tee "$out/pi-os.log"
cp "$root/root/out/scenes.jsonl" "$out/$arch-scenes.jsonl"
cp "$root/root/out/faces/results.jsonl" "$out/$arch-faces.jsonl"

# --- the same on this machine, and the comparison ---------------------------------------------
bin=$(dirname "$x86py")
"$bin/edgeemo" classify "$data/scenes" --out "$out/x86-scenes" >/dev/null 2>&1 || true
"$bin/edgeemo" classify "$root/root/faces" --detector none --out "$out/x86-faces" >/dev/null 2>&1 || true
status=0
say "scenes (detector out of the box), x86 against $arch:"
"$x86py" "$here/pi-os/compare.py" "$out/x86-scenes/results.jsonl" "$out/$arch-scenes.jsonl" --faces \
    --truth "$data/scenes/training.xml" | tee "$out/compare-scenes.txt" || status=1
say "FER2013 val/ faces (--detector none), x86 against $arch:"
"$x86py" "$here/pi-os/compare.py" "$out/x86-faces/results.jsonl" "$out/$arch-faces.jsonl" \
    | tee "$out/compare-faces.txt" || status=1
say "records and logs in $out; $([[ $status == 0 ]] && echo PASSED || echo FAILED)"
exit $status
