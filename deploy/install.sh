#!/usr/bin/env bash
# Installs edge-change on a board without dpkg tooling (or from a source checkout), to the same
# places as the .deb:
#   /usr/bin/edge-change                         the binary
#   /lib/systemd/system/edge-change.service      the unit (local changes: systemctl edit edge-change)
#   /usr/lib/sysusers.d/edge-change.conf         the user edge-change, in group video
#   /etc/edge-change/config.toml                 the configuration (never overwritten: a newer default
#                                                goes to config.toml.new)
#   /etc/edge-change/mqtt-password               empty unless you put the MQTT password there (0600)
#   /usr/share/edge-change/models/               the encoders and their cards
# then creates the user (systemd-sysusers), reloads systemd and enables and starts the service.
#
# Usage (as root, from the repository or an unpacked release):
#   deploy/install.sh [--binary FILE] [--no-start] [--root DIR]
#   deploy/install.sh --uninstall [--purge] [--root DIR]
#   --binary FILE  the binary to install (default: target/release/edge-change, else
#                  target/aarch64-unknown-linux-gnu/release/edge-change)
#   --no-start     install and enable, but do not start now (images built in a chroot)
#   --root DIR     install under DIR instead of / and touch no running systemd (staging, tests)
#   --uninstall    stop, disable and remove what was installed; config and state are kept
#   --purge        with --uninstall: also remove /etc/edge-change and /var/lib/edge-change (the
#                  baselines and any events not yet delivered to the broker)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

binary="" start=1 root="" uninstall=0 purge=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a file}; shift ;;
        --no-start) start=0 ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
root=${root%/}
say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# Only a real install talks to systemd; --root stages files.
live=0
if [ -z "$root" ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"
    [ -d /run/systemd/system ] && live=1 || say "systemd is not running: files only, no enable/start"
    if dpkg-query -W -f='${Status}' edge-change 2>/dev/null | grep -q "install ok installed"; then
        die "the edge-change package is installed: use apt/dpkg to upgrade or remove it, not this script"
    fi
fi

if [ "$uninstall" -eq 1 ]; then
    if [ "$live" -eq 1 ]; then
        systemctl disable --now edge-change.service 2>/dev/null || true
    fi
    rm -f "$root/usr/bin/edge-change" "$root/lib/systemd/system/edge-change.service" \
        "$root/usr/lib/sysusers.d/edge-change.conf"
    rm -rf "$root/usr/share/edge-change"
    [ "$live" -eq 1 ] && systemctl daemon-reload
    if [ "$purge" -eq 1 ]; then
        rm -rf "$root/etc/edge-change" "$root/var/lib/edge-change"
        say "removed, with the configuration and the state (the user edge-change is kept)"
    else
        say "removed; kept $root/etc/edge-change and $root/var/lib/edge-change (--purge removes them)"
    fi
    exit 0
fi

if [ -z "$binary" ]; then
    for candidate in "$here/target/release/edge-change" \
        "$here/target/aarch64-unknown-linux-gnu/release/edge-change"; do
        [ -x "$candidate" ] && { binary=$candidate; break; }
    done
    [ -n "$binary" ] || die "no binary found: build one (cargo build --release) or pass --binary FILE"
fi
[ -x "$binary" ] || die "$binary: not an executable file"
# A binary for the wrong architecture fails here rather than in a restart loop.
if [ -z "$root" ]; then
    "$binary" --version >/dev/null 2>&1 || "$binary" config default >/dev/null \
        || die "$binary does not run on this machine (wrong architecture or glibc?)"
fi

install -d "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/lib/sysusers.d" \
    "$root/usr/share/edge-change/models" "$root/etc/edge-change"
install -m 0755 "$binary" "$root/usr/bin/edge-change"
install -m 0644 "$here/deploy/edge-change.service" "$root/lib/systemd/system/edge-change.service"
install -m 0644 "$here/deploy/edge-change.sysusers" "$root/usr/lib/sysusers.d/edge-change.conf"
install -m 0644 "$here"/models/*.onnx "$here"/models/*.json "$root/usr/share/edge-change/models/"
if [ ! -e "$root/etc/edge-change/config.toml" ]; then
    install -m 0644 "$here/config/edge-change.toml" "$root/etc/edge-change/config.toml"
elif ! cmp -s "$here/config/edge-change.toml" "$root/etc/edge-change/config.toml"; then
    install -m 0644 "$here/config/edge-change.toml" "$root/etc/edge-change/config.toml.new"
    say "kept your /etc/edge-change/config.toml; the new default is config.toml.new"
fi
# The unit's LoadCredential= refuses to start without this file; empty = no password.
[ -e "$root/etc/edge-change/mqtt-password" ] \
    || install -m 0600 /dev/null "$root/etc/edge-change/mqtt-password"

if [ -n "$root" ]; then
    systemd-sysusers --root="$root" edge-change.conf
    say "staged under $root"
    exit 0
fi
systemd-sysusers edge-change.conf
"$root/usr/bin/edge-change" config check --config /etc/edge-change/config.toml \
    || say "the configuration above needs fixing before the service can start"
if [ "$live" -eq 1 ]; then
    systemctl daemon-reload
    if [ "$start" -eq 1 ]; then
        systemctl enable --now edge-change.service
        say "installed and started: systemctl status edge-change; journalctl -u edge-change -f"
    else
        systemctl enable edge-change.service
        say "installed and enabled; starts at next boot (or systemctl start edge-change)"
    fi
fi
