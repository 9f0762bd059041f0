#!/usr/bin/env bash
# Cross-builds edge-change release binaries for the boards on a Debian bookworm (x86-64) host:
#   aarch64-unknown-linux-gnu        Raspberry Pi OS 64-bit, Jetson (JetPack 5/6)
#   armv7-unknown-linux-gnueabihf    32-bit Raspberry Pi OS (only with --armv7)
# with Debian's gcc cross linkers, against Debian's cross glibc (bookworm: 2.36, the boards' own or
# older), then checks the newest glibc symbol version each binary needs and, when cargo-deb is
# installed, builds the arm64 .deb.
#
# Usage: deploy/build-arm.sh [--armv7] [--no-deb] [--no-install]
#   --no-install  do not rustup/apt-get anything (fail with a message if a tool is missing)
# Output: target/<triple>/release/edge-change, target/<triple>/debian/*.deb
# Every step that cannot run says so and why; the script exits non-zero only when the aarch64
# binary could not be built or needs a glibc newer than the boards'.
set -euo pipefail
cd "$(dirname "$0")/.."

armv7=0 deb=1 install=1
for arg in "$@"; do
    case "$arg" in
        --armv7) armv7=1 ;;
        --no-deb) deb=0 ;;
        --no-install) install=0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build-arm: unknown argument $arg" >&2; exit 2 ;;
    esac
done

# The oldest glibc the binary must run on: Raspberry Pi OS bookworm has 2.36, JetPack 6 (Ubuntu
# 22.04) 2.35, JetPack 5 (Ubuntu 20.04) 2.31 — out of reach of a bookworm build (GLIBC_2.34 for
# pthreads): build that one on bullseye or Ubuntu 20.04 with BOARD_GLIBC=2.31.
BOARD_GLIBC=${BOARD_GLIBC:-2.35}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
say() { printf 'build-arm: %s\n' "$*"; }

need_apt() { # packages... : installs the missing ones unless --no-install
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$install" -eq 0 ]; then
        say "missing packages ${missing[*]} (run without --no-install)"; return 1
    fi
    $sudo apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
}

need_target() { # triple
    rustup target list --installed | grep -qx "$1" && return 0
    if [ "$install" -eq 0 ]; then say "rust target $1 missing (rustup target add $1)"; return 1; fi
    rustup target add "$1"
}

# The newest GLIBC_x.y the binary's dynamic symbols need.
glibc_needed() { # objdump binary
    "$1" -T "$2" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1 | sed 's/GLIBC_//'
}

build() { # triple gcc-prefix apt-packages...
    local triple=$1 prefix=$2; shift 2
    local env_triple=${triple//-/_}
    need_target "$triple" || return 1
    need_apt "$@" || return 1
    # Linker for rustc, C compiler and archiver for the build scripts (ring, SQLite, tract's
    # assembly kernels).
    export "CARGO_TARGET_${env_triple^^}_LINKER=${prefix}-gcc"
    export "CC_${env_triple}=${prefix}-gcc" "AR_${env_triple}=${prefix}-ar"
    say "building $triple (release; tract takes a while)"
    local start=$SECONDS
    cargo build --locked --release --target "$triple" || return 1
    local bin="target/$triple/release/edge-change"
    say "$triple built in $((SECONDS - start)) s: $bin"
    say "$triple size: $(stat -c %s "$bin") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "$bin")")), $(file -b "$bin" | cut -d, -f1-2)"
    local glibc
    glibc=$(glibc_needed "${prefix}-objdump" "$bin")
    if [ "$(printf '%s\n%s\n' "$glibc" "$BOARD_GLIBC" | sort -V | tail -1)" = "$BOARD_GLIBC" ]; then
        say "$triple needs glibc $glibc: runs on the boards' $BOARD_GLIBC"
    else
        say "$triple needs glibc $glibc, newer than the boards' $BOARD_GLIBC: build on an older distribution"
        return 1
    fi
}

native=target/release/edge-change
if [ -x "$native" ]; then
    say "x86-64 size for comparison: $(stat -c %s "$native") bytes ($(numfmt --to=iec-i --suffix=B "$(stat -c %s "$native")"))"
fi

build aarch64-unknown-linux-gnu aarch64-linux-gnu gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu file \
    || { say "aarch64 build FAILED"; exit 1; }

if [ "$armv7" -eq 1 ]; then
    build armv7-unknown-linux-gnueabihf arm-linux-gnueabihf gcc-arm-linux-gnueabihf libc6-dev-armhf-cross binutils-arm-linux-gnueabihf \
        || say "armv7 build failed (not needed for the 64-bit boards; see the output above)"
else
    say "armv7 skipped (pass --armv7 to try it)"
fi

if [ "$deb" -eq 0 ]; then
    say "arm64 .deb skipped (--no-deb)"
elif ! cargo deb --version >/dev/null 2>&1; then
    say "arm64 .deb cannot be built: cargo-deb is not installed (cargo install cargo-deb)"
else
    # --no-build: package the binary built above; cargo-deb maps the triple to Architecture: arm64
    # Depends is fixed in Cargo.toml (libc6 >= 2.35).
    cargo deb --no-build --target aarch64-unknown-linux-gnu
    say "arm64 .deb: $(ls -1 target/aarch64-unknown-linux-gnu/debian/*.deb | tail -1)"
fi
