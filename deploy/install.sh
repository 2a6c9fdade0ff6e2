#!/usr/bin/env bash
# Install edgeemo as a systemd service on a Raspberry Pi OS / Debian device (64-bit, or 32-bit ARM), or remove it.
# Run `deploy/install.sh --help` for the options. Safe to run again: it changes only what differs.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo deploy/install.sh [OPTIONS]            install, or update, and start the service
       sudo deploy/install.sh --uninstall [--purge]  remove it

Installs:  /opt/edgeemo/venv                   a virtual environment with the edgeemo device package only
                                               (no TensorFlow)
           /etc/edgeemo/edgeemo.toml           the settings (never overwritten: a newer shipped version
                                               is put beside it as edgeemo.toml.dist)
           /etc/systemd/system/edgeemo.service, edgeemo-camera.service, edgeemo@.service
           /var/lib/edgeemo/inbox              drop photos here (group edgeemo may write)
           user and group edgeemo; the service is enabled and (re)started.
On 32-bit Raspberry Pi OS (armv7l) the venv takes apt's python3-opencv, python3-numpy and opencv-data
(installed when missing) through --system-site-packages, and pip takes tflite-runtime.
Without a running systemd (a chroot, an image build, a container) the units are installed and enabled
where systemctl can do that offline; what needs systemd running is skipped and listed at the end.

Options:
  --camera           enable edgeemo-camera.service (settings /etc/edgeemo/edgeemo-camera.toml) instead
                     of the inbox service
  --picamera2        the Raspberry Pi CSI camera: implies --camera, installs python3-picamera2 with apt
                     and gives the venv --system-site-packages so that it can import it
  --package SPEC     what pip installs (a wheel file, or e.g. "edgeemo==0.1.0"); default: this checkout
  --no-package       create the venv but do not (re)install the package in it
  --yunet FILE       install a YuNet face detector (face_detection_yunet_*.onnx) as
                     /opt/edgeemo/models/face_detection_yunet.onnx, where detector "auto" finds it
  --python PATH      the Python that creates the venv (default: python3; 3.10 or later)
  --no-start         enable the service but do not (re)start it
  --uninstall        stop and disable the services, remove the units and /opt/edgeemo; keeps the
                     settings, the data (/var/lib/edgeemo) and the user
  --purge            with --uninstall: also remove /etc/edgeemo, /var/lib/edgeemo and the user
  --dry-run          print what would be done and change nothing
  --destdir DIR      install the files under DIR (or set DESTDIR=DIR), for staging and tests: users,
                     ownership, apt and systemctl are skipped (and listed). A venv made there has DIR in
                     its paths, so it is for checking, not for copying to a device.
  -h, --help         this text
EOF
}

die() { echo "edgeemo-install: error: $*" >&2; exit 1; }
say() { echo "edgeemo-install: $*"; }
did() {                                            # did "installed" PATH, or "would be installed" in a dry run
    if [[ $DRY_RUN -eq 1 ]]; then say "would be $1: $2"; else say "$1: $2"; fi
}

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PYTHON="${PYTHON:-python3}"
DRY_RUN=0 UNINSTALL=0 PURGE=0 CAMERA=0 PICAMERA2=0 NO_PACKAGE=0 NO_START=0 PACKAGE="" YUNET=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --camera) CAMERA=1 ;;
        --picamera2) CAMERA=1; PICAMERA2=1 ;;
        --package) [[ $# -ge 2 ]] || die "--package needs a value"; PACKAGE="$2"; shift ;;
        --no-package) NO_PACKAGE=1 ;;
        --yunet) [[ $# -ge 2 ]] || die "--yunet needs a file"; YUNET="$2"; shift ;;
        --python) [[ $# -ge 2 ]] || die "--python needs a path"; PYTHON="$2"; shift ;;
        --no-start) NO_START=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --destdir) [[ $# -ge 2 ]] || die "--destdir needs a folder"; DESTDIR="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
[[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge goes with --uninstall"
if [[ -n $DESTDIR ]]; then
    [[ $DESTDIR == /* ]] || DESTDIR="$(pwd)/$DESTDIR"
    # the real folder it names: "//", "/./" or a link to / would stage into the real /etc, skipping the user
    DESTDIR="$(realpath -m -- "$DESTDIR")"
    [[ $DESTDIR != / ]] || die "--destdir $DESTDIR is the real system's root; leave --destdir out to install for real"
fi

PREFIX=/opt/edgeemo
VENV=$PREFIX/venv
ETC=/etc/edgeemo
UNITDIR=/etc/systemd/system
STATE=/var/lib/edgeemo
SERVICE_USER=edgeemo
UNITS=(edgeemo.service edgeemo-camera.service edgeemo@.service)
MAIN_UNIT=edgeemo.service
DROPIN=network.conf                                # $UNITDIR/$MAIN_UNIT.d/: the broker's network, when configured
if [[ $CAMERA -eq 1 ]]; then MAIN_UNIT=edgeemo-camera.service; fi

root() { printf '%s%s' "$DESTDIR" "$1"; }          # a system path, under DESTDIR if set

show() { printf '+'; printf ' %q' "$@"; printf '\n'; }

run() {                                            # change files (under DESTDIR if set)
    if [[ $DRY_RUN -eq 1 ]]; then show "$@"; else "$@"; fi
}

system() {                                         # change the running system: not under DESTDIR
    if [[ -n $DESTDIR ]]; then
        printf 'edgeemo-install: skipped under DESTDIR:'; printf ' %q' "$@"; printf '\n'
    else
        run "$@"
    fi
}

SKIPPED=()
systemd_running() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

service() {                                        # systemctl ARGS: what can be done without systemd running
    if [[ -n $DESTDIR ]]; then system systemctl "$@"; return; fi
    if systemd_running; then run systemctl "$@"; return; fi
    local verb=$1 args=() a now=0
    shift
    for a in "$@"; do if [[ $a == --now ]]; then now=1; else args+=("$a"); fi; done
    if [[ ($verb == enable || $verb == disable) ]] && command -v systemctl >/dev/null; then
        # enable and disable only make or remove symlinks, which systemctl does offline; --now needs systemd
        run systemctl "$verb" "${args[@]}"
        if [[ $now -eq 1 ]]; then SKIPPED+=("systemctl stop ${args[*]}"); fi
    elif [[ $verb == enable || $verb == disable ]]; then
        # no systemctl at all (a bare image root): the links systemctl would make, from [Install] WantedBy=
        local unit file target
        for unit in "${args[@]}"; do
            file=$unit
            [[ $unit == *@?*.* ]] && file="${unit%%@*}@.${unit##*.}"       # an instance: its template's file
            for target in $(sed -n 's/^WantedBy=//p' "$(root "$UNITDIR/$file")" 2>/dev/null); do
                if [[ $verb == enable ]]; then
                    run install -d "$(root "$UNITDIR/$target.wants")"
                    run ln -sfn "$UNITDIR/$unit" "$(root "$UNITDIR/$target.wants/$unit")"
                    did linked "$UNITDIR/$target.wants/$unit (what systemctl enable makes)"
                elif [[ -L $(root "$UNITDIR/$target.wants/$unit") ]]; then
                    run rm -f "$(root "$UNITDIR/$target.wants/$unit")"
                    did removed "$UNITDIR/$target.wants/$unit"
                fi
            done
        done
        if [[ $now -eq 1 ]]; then SKIPPED+=("systemctl stop ${args[*]}"); fi
    else
        SKIPPED+=("systemctl $verb${args[*]:+ ${args[*]}}")
    fi
}

install_file() {                                   # SRC DEST MODE: copy if the content differs
    local src=$1 dest=$2 mode=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then
        say "unchanged: $dest"
        if [[ "$(stat -c %a "$dest")" != "${mode#0}" ]]; then run chmod "$mode" "$dest"; fi
    else
        run install -D -m "$mode" "$src" "$dest"
        did installed "$dest"
    fi
}

install_config() {                                 # SRC DEST: never overwrite the user's settings
    local src=$1 dest=$2
    if [[ ! -e $dest ]]; then
        run install -D -m 0640 "$src" "$dest"
        did installed "$dest"
    elif cmp -s "$src" "$dest"; then
        say "unchanged: $dest"
    elif [[ -f $dest.dist ]] && cmp -s "$src" "$dest.dist"; then
        say "kept your $dest (the shipped version is in $dest.dist)"
    else
        run install -m 0640 "$src" "$dest.dist"
        say "kept your $dest; the shipped version is in $dest.dist: compare them (diff $dest $dest.dist)"
    fi
    system chgrp "$SERVICE_USER" "$dest"
}

config_needs() {                                   # VENV: what the main unit's config asks for (MQTT, metrics)
    local py=$1/bin/python conf dropin_dir reqs text
    conf="$(root "$ETC/edgeemo.toml")"
    if [[ $CAMERA -eq 1 ]]; then conf="$(root "$ETC/edgeemo-camera.toml")"; fi
    dropin_dir="$(root "$UNITDIR/$MAIN_UNIT.d")"
    if [[ ! -x $py || ! -f $conf ]] || ! "$py" -c 'import edgeemo.deployment' 2>/dev/null; then
        say "skipped: checking $conf for MQTT and metrics (edgeemo is not installed in $1 yet)"
        return
    fi
    # the extras it needs (paho-mqtt for [mqtt], prometheus-client for metrics-file)
    reqs="$("$py" -m edgeemo.deployment requirements "$conf")" || die "$conf: not usable (see above)"
    if [[ -n $reqs ]]; then
        mapfile -t req_list <<<"$reqs"
        run "$py" -m pip install --disable-pip-version-check "${req_list[@]}"
    fi
    # network for the broker only: a drop-in beside the unit (removed when the config names no broker)
    text="$("$py" -m edgeemo.deployment dropin "$conf")" || die "$conf: cannot set up the broker's network (see above)"
    if [[ -n $text ]]; then
        local tmp; tmp="$(mktemp)"
        printf '%s\n' "$text" >"$tmp"
        install_file "$tmp" "$dropin_dir/$DROPIN" 0644
        rm -f "$tmp"
    elif [[ -f $dropin_dir/$DROPIN ]]; then
        run rm -f "$dropin_dir/$DROPIN"
        did removed "$dropin_dir/$DROPIN"
    fi
}

ARM32=0
PIP_ARCH=()                                        # how pip is run: under setarch linux32 on a 64-bit kernel
check_platform() {
    local arch
    arch="$(uname -m)"
    case "$arch" in
        x86_64) ;;
        aarch64)
            # 32-bit Raspberry Pi OS on a 64-bit kernel: pip's markers would see aarch64; linux32 shows armv8l
            if [[ $(getconf LONG_BIT 2>/dev/null) == 32 ]]; then ARM32=1; PIP_ARCH=(setarch linux32); fi ;;
        armv7l|armv8l) ARM32=1 ;;
        armv6l) die "this is an ARMv6 system (Raspberry Pi 1 or Zero); no TFLite runtime is built for it: use a Pi Zero 2, 3, 4 or 5" ;;
        *) say "warning: untested architecture $arch" ;;
    esac
    if [[ $ARM32 -eq 1 ]]; then
        say "32-bit ARM: the venv uses apt's python3-opencv and python3-numpy (--system-site-packages) and tflite-runtime"
    fi
    [[ -f /etc/debian_version ]] || say "warning: not a Debian-based system; the user and apt steps may need changes"
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.10 or later (sudo apt install python3 python3-venv) or pass --python"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); edgeemo needs Python 3.10 or later"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
        || die "$PYTHON cannot create virtual environments; install them: sudo apt install python3-venv"
}

do_install() {
    check_platform
    local venv_dir; venv_dir="$(root "$VENV")"

    if getent passwd "$SERVICE_USER" >/dev/null; then
        say "user $SERVICE_USER exists"
    else
        system useradd --system --user-group --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin \
            --comment "edgeemo service" "$SERVICE_USER"
    fi

    run install -d -m 0755 "$(root "$PREFIX")" "$(root "$ETC")" "$(root "$UNITDIR")"
    run install -d -m 0750 "$(root "$STATE")"
    run install -d -m 2770 "$(root "$STATE/inbox")"
    system chown "$SERVICE_USER:$SERVICE_USER" "$STATE" "$STATE/inbox"

    if [[ $PICAMERA2 -eq 1 ]]; then
        if "$PYTHON" -c 'import picamera2' 2>/dev/null; then
            say "picamera2 is installed"
        else
            system apt-get install -y python3-picamera2
        fi
    fi

    if [[ $ARM32 -eq 1 ]]; then
        # no PyPI OpenCV or numpy<2 wheel for 32-bit ARM: Debian's, and the Haar cascades of opencv-data
        if "$PYTHON" -c 'import cv2, numpy' 2>/dev/null \
                && [[ -e /usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml ]]; then
            say "python3-opencv and opencv-data are installed"
        else
            system apt-get install -y python3-opencv python3-numpy opencv-data
        fi
    fi

    local site=false
    if [[ $PICAMERA2 -eq 1 || $ARM32 -eq 1 ]]; then site=true; fi
    if [[ -x $venv_dir/bin/python ]]; then
        say "venv exists: $venv_dir"
        if ! grep -q "^include-system-site-packages = $site\$" "$venv_dir/pyvenv.cfg"; then
            run sed -i "s/^include-system-site-packages = .*/include-system-site-packages = $site/" "$venv_dir/pyvenv.cfg"
            did "set" "include-system-site-packages = $site in $venv_dir/pyvenv.cfg"
        fi
    elif [[ $site == true ]]; then
        run "$PYTHON" -m venv --system-site-packages "$venv_dir"
    else
        run "$PYTHON" -m venv "$venv_dir"
    fi

    if [[ $NO_PACKAGE -eq 0 ]]; then
        local spec=${PACKAGE:-$SRC_DIR}
        [[ -n $PACKAGE || -f $SRC_DIR/pyproject.toml ]] || die "no package to install: pass --package SPEC"
        # the device package only: no [train] extra, so no TensorFlow
        run "${PIP_ARCH[@]}" "$venv_dir/bin/python" -m pip install --disable-pip-version-check --upgrade "$spec"
        if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            run "$venv_dir/bin/python" -m pip install --disable-pip-version-check "tomli>=2"   # TOML on 3.10
        fi
        run "$venv_dir/bin/python" -c 'import importlib.util as u, sys
import edgeemo.watch
sys.exit("TensorFlow is importable in the venv; the device needs only edgeemo itself" if u.find_spec("tensorflow") else 0)'
    fi

    if [[ -n $YUNET ]]; then
        [[ -f $YUNET ]] || die "$YUNET: no such file (--yunet takes the YuNet .onnx file)"
        install_file "$YUNET" "$(root "$PREFIX/models/face_detection_yunet.onnx")" 0644
    fi

    install_config "$SRC_DIR/deploy/edgeemo.toml" "$(root "$ETC/edgeemo.toml")"
    install_config "$SRC_DIR/deploy/edgeemo-camera.toml" "$(root "$ETC/edgeemo-camera.toml")"
    local u
    for u in "${UNITS[@]}"; do
        install_file "$SRC_DIR/systemd/$u" "$(root "$UNITDIR/$u")" 0644
    done
    config_needs "$venv_dir"

    service daemon-reload
    service enable "$MAIN_UNIT"
    if [[ $NO_START -eq 0 ]]; then
        service restart "$MAIN_UNIT"
    fi
    report_skipped
    if [[ $CAMERA -eq 1 ]]; then
        say "done: edgeemo-camera classifies frames into $STATE/camera; settings $ETC/edgeemo-camera.toml"
        say "logs: journalctl -u edgeemo-camera -f"
    else
        say "done: drop photos into $STATE/inbox (add producers to the group: usermod -aG $SERVICE_USER USER);"
        say "results in $STATE/results; settings $ETC/edgeemo.toml; logs: journalctl -u edgeemo -f"
    fi
}

report_skipped() {
    ((${#SKIPPED[@]})) || return 0
    say "systemd is not running here (a chroot, an image build or a container), so these were skipped;"
    say "the installed units take effect at the next boot, or run them once systemd runs:"
    local step
    for step in "${SKIPPED[@]}"; do say "  skipped: $step"; done
}

do_uninstall() {
    local u link name
    for u in edgeemo.service edgeemo-camera.service; do
        if [[ -z $DESTDIR && ! -e $(root "$UNITDIR/$u") ]]; then continue; fi
        service disable --now "$u"
    done
    for link in "$(root "$UNITDIR")"/*.wants/edgeemo@*.service; do
        [[ -e $link || -L $link ]] || continue
        name="$(basename "$link")"
        service disable --now "$name"
    done
    for u in "${UNITS[@]}"; do
        if [[ -e $(root "$UNITDIR/$u") ]]; then
            run rm -f "$(root "$UNITDIR/$u")"
            did removed "$(root "$UNITDIR/$u")"
        fi
        if [[ -e $(root "$UNITDIR/$u.d/$DROPIN") ]]; then
            run rm -f "$(root "$UNITDIR/$u.d/$DROPIN")"
            did removed "$(root "$UNITDIR/$u.d/$DROPIN")"
            run rmdir --ignore-fail-on-non-empty "$(root "$UNITDIR/$u.d")"
        fi
    done
    service daemon-reload
    if [[ -e $(root "$PREFIX") ]]; then
        run rm -rf "$(root "$PREFIX")"
        did removed "$(root "$PREFIX")"
    fi
    if [[ $PURGE -eq 1 ]]; then
        local d
        for d in "$ETC" "$STATE"; do
            if [[ -e $(root "$d") ]]; then
                run rm -rf "$(root "$d")"
                did removed "$(root "$d")"
            fi
        done
        if getent passwd "$SERVICE_USER" >/dev/null; then system userdel "$SERVICE_USER"; fi
    else
        say "kept the settings in $(root "$ETC") and the data in $(root "$STATE") (inbox, done, failed," \
            "results) and the user $SERVICE_USER; --uninstall --purge removes them"
    fi
    report_skipped
}

if [[ -z $DESTDIR && $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 ...), or try --dry-run, or --destdir DIR to install into a staging folder"
fi
if [[ $DRY_RUN -eq 1 ]]; then say "dry run: nothing is changed"; fi
if [[ $UNINSTALL -eq 1 ]]; then do_uninstall; else do_install; fi
