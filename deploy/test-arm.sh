#!/usr/bin/env bash
# Proves the aarch64 build computes what the x86-64 build computes: runs the aarch64 binary under
# qemu-aarch64-static (user-mode emulation, Debian's cross glibc as its root) and compares its
# `check --json` output with the native binary's on
#   - real pairs from ../shared/data (skipped with a message when absent), and
#   - generated images (a field, a cleared patch, a shifted exposure, a noisy copy),
# with each encoder: same decisions (pair and tile), same directions, distances and vegetation
# fractions within 1e-3 relative. Then runs the aarch64 daemon on one capture pair under qemu and
# checks it emits one event and exits 0 on SIGTERM.
#
# Usage: deploy/test-arm.sh [--no-install] [--no-int8]
#   needs target/aarch64-unknown-linux-gnu/release/edge-change (deploy/build-arm.sh) and a native
#   binary (target/release/edge-change, else target/debug/edge-change); python3 with Pillow for
#   the generated images.
# Exit status: 0 when every comparison that could run agreed; 1 on any disagreement or failure.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1 int8=1
for arg in "$@"; do
    case "$arg" in
        --no-install) install=0 ;;
        --no-int8) int8=0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "test-arm: unknown argument $arg" >&2; exit 2 ;;
    esac
done
say() { printf 'test-arm: %s\n' "$*"; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

arm=target/aarch64-unknown-linux-gnu/release/edge-change
native=target/release/edge-change
[ -x "$native" ] || native=target/debug/edge-change
[ -x "$arm" ] || { say "CANNOT RUN: $arm missing (run deploy/build-arm.sh first)"; exit 1; }
[ -x "$native" ] || { say "CANNOT RUN: no native binary (cargo build --release)"; exit 1; }
if ! command -v qemu-aarch64-static >/dev/null; then
    if [ "$install" -eq 1 ]; then
        $sudo apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q qemu-user-static >/dev/null
    else
        say "CANNOT RUN: qemu-aarch64-static missing (apt-get install qemu-user-static)"; exit 1
    fi
fi
sysroot=/usr/aarch64-linux-gnu
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] \
    || { say "CANNOT RUN: $sysroot has no aarch64 glibc (apt-get install libc6-arm64-cross)"; exit 1; }
# An array, not a function: `"${qarm[@]}" … &` makes $! the emulated process itself.
qarm=(qemu-aarch64-static -L "$sysroot" "$arm")
say "native: $native; aarch64: $arm under $(qemu-aarch64-static --version | head -1)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# Generated pairs: deterministic, small (a few tiles each) so that qemu stays quick.
python3 - "$work/gen" <<'PY'
import os, random, sys
from PIL import Image, ImageDraw, ImageFilter
out = sys.argv[1]; os.makedirs(out)
random.seed(6)
def field(w, h):
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            g = 90 + (x * 7 + y * 13) % 60 + random.randint(-12, 12)
            px[x, y] = (40 + (x // 16) % 3 * 10, g, 30 + (y // 16) % 4 * 8)
    return img.filter(ImageFilter.GaussianBlur(1))
base = field(384, 256); base.save(f"{out}/field.png")
cleared = base.copy(); ImageDraw.Draw(cleared).rectangle([150, 60, 300, 200], fill=(150, 120, 90))
cleared.save(f"{out}/cleared.png")
bright = base.point(lambda v: min(255, int(v * 1.15))); bright.save(f"{out}/bright.png")
noisy = base.copy(); px = noisy.load()
for y in range(0, 256, 3):
    for x in range(0, 384, 5):
        r, g, b = px[x, y]; px[x, y] = (r, max(0, g - 25), b)
noisy.save(f"{out}/noisy.jpg", quality=85)
small = field(128, 128); small.save(f"{out}/small.png")
small_cut = small.copy(); ImageDraw.Draw(small_cut).ellipse([20, 20, 100, 100], fill=(160, 140, 100))
small_cut.save(f"{out}/small-cut.png")
with open(f"{out}/pairs.csv", "w") as f:
    f.write("before,after\n")
    for a, b in [("field.png", "cleared.png"), ("field.png", "bright.png"),
                 ("field.png", "noisy.jpg"), ("small.png", "small-cut.png"), ("field.png", "field.png")]:
        f.write(f"{a},{b}\n")
with open(f"{out}/small.csv", "w") as f:
    f.write("before,after\nsmall.png,small-cut.png\nsmall.png,small.png\n")
PY

# Real pairs, read in place.
real="$work/real.csv"
echo "before,after" > "$real"
data=../shared/data
for pair in "brunei-s2/images/2018_01_patch_018.tif brunei-s2/images/2022_02_patch_018.tif" \
    "sztaki/Szada_1/before.bmp sztaki/Szada_1/after.bmp" \
    "oscd/beirut/before/rgb.png oscd/beirut/after/rgb.png"; do
    set -- $pair
    if [ -f "$data/$1" ] && [ -f "$data/$2" ]; then
        echo "$(realpath "$data/$1"),$(realpath "$data/$2")" >> "$real"
    else
        say "real pair $1 skipped: not in $data"
    fi
done

compare() { # label native.jsonl arm.jsonl
    python3 - "$@" <<'PY'
import json, sys
label, a_path, b_path = sys.argv[1:4]
A = [json.loads(l) for l in open(a_path)]; B = [json.loads(l) for l in open(b_path)]
bad = []; worst = 0.0
def close(x, y, what):
    global worst
    rel = abs(x - y) / max(abs(x), abs(y), 1e-9)
    worst = max(worst, rel)
    if rel > 1e-3 and abs(x - y) > 1e-6: bad.append(f"{what}: {x} vs {y} (rel {rel:.2e})")
if len(A) != len(B): bad.append(f"{len(A)} vs {len(B)} results")
for i, (a, b) in enumerate(zip(A, B)):
    p = f"pair {i + 1} ({a.get('after')})"
    if "error" in a or "error" in b:
        bad.append(f"{p}: error {a.get('error')!r} vs {b.get('error')!r}"); continue
    for k in ("changed", "direction"):
        if a[k] != b[k]: bad.append(f"{p}: {k} {a[k]} vs {b[k]}")
    close(a["distance"], b["distance"], f"{p} distance")
    if len(a["tiles"]) != len(b["tiles"]): bad.append(f"{p}: tile counts differ")
    for j, (s, t) in enumerate(zip(a["tiles"], b["tiles"])):
        if s["changed"] != t["changed"]: bad.append(f"{p} tile {j}: changed {s['changed']} vs {t['changed']}")
        close(s["distance"], t["distance"], f"{p} tile {j} distance")
    for m in ("vegetation", "learned"):
        if a[m]["direction"] != b[m]["direction"]: bad.append(f"{p}: {m}.direction differs")
        for k in ("before", "after"): close(a[m][k], b[m][k], f"{p} {m}.{k}")
tiles = sum(len(a.get("tiles", [])) for a in A)
changed = sum(1 for a in A if a.get("changed"))
print(f"test-arm: {label}: {len(A)} pairs, {tiles} tiles, {changed} changed; "
      f"largest relative difference {worst:.2e}: " + ("AGREE" if not bad else "DISAGREE"))
for line in bad[:20]: print("  " + line)
sys.exit(1 if bad else 0)
PY
}

run_set() { # label csv model
    local label=$1 csv=$2 model=$3 code=0 start
    [ "$(wc -l < "$csv")" -gt 1 ] || { say "$label: no pairs"; return 0; }
    start=$SECONDS
    "$native" check --pairs "$csv" --json --model "$model" > "$work/$label.x86.jsonl" || code=$?
    [ "$code" -le 1 ] || { say "$label: native check failed ($code)"; failed=1; return 0; }
    local t_native=$((SECONDS - start)); start=$SECONDS; code=0
    "${qarm[@]}" check --pairs "$csv" --json --model "$model" > "$work/$label.arm.jsonl" || code=$?
    [ "$code" -le 1 ] || { say "$label: aarch64 check failed ($code)"; failed=1; return 0; }
    say "$label: native ${t_native} s, aarch64 under qemu $((SECONDS - start)) s"
    compare "$label" "$work/$label.x86.jsonl" "$work/$label.arm.jsonl" || failed=1
}

fp32_model=$PWD/models/encoder-fp32.onnx int8_model=$PWD/models/encoder-int8.onnx
run_set generated-fp32 "$work/gen/pairs.csv" "$fp32_model"
run_set real-fp32 "$real" "$fp32_model"
if [ "$int8" -eq 1 ]; then
    # int8's kernels are the ones most likely to differ between architectures; tract runs it
    # slowly (and under qemu slower still), so only the single-tile pairs.
    run_set generated-int8 "$work/gen/small.csv" "$int8_model"
else
    say "int8 comparison skipped (--no-int8)"
fi

# The aarch64 daemon under qemu: a folder source, no broker; two captures -> one event; SIGTERM -> 0.
d="$work/daemon"
mkdir -p "$d/in" "$d/state"
cat > "$d/config.toml" <<TOML
device_id = "qemu-arm64"
state_dir = "$d/state"
workers = 1
[model]
path = "$fp32_model"
[mqtt]
url = ""
[sources.field]
type = "directory"
path = "$d/in"
settle = "500ms"
TOML
start=$SECONDS
"${qarm[@]}" run --config "$d/config.toml" > "$d/log" 2>&1 &
pid=$!
wait_for() { # regex seconds
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do grep -qE "$1" "$d/log" && return 0; sleep 0.5; done
    return 1
}
if wait_for 'edge-change running' 120; then
    cp "$work/gen/field.png" "$d/in/0001.png"; sleep 2
    cp "$work/gen/cleared.png" "$d/in/0002.png"
    if wait_for 'event seq=1 type=change' 300; then
        say "aarch64 daemon: change event after $((SECONDS - start)) s under qemu"
    else
        say "aarch64 daemon: NO EVENT"; failed=1
    fi
else
    say "aarch64 daemon: did not start"; failed=1
fi
kill -TERM "$pid" 2>/dev/null || true
code=0; wait "$pid" || code=$?
[ "$code" -eq 0 ] && say "aarch64 daemon: exit 0 after SIGTERM" \
    || { say "aarch64 daemon: exit $code after SIGTERM"; failed=1; }
[ "$failed" -eq 0 ] || { say "log of the daemon:"; sed 's/^/  /' "$d/log" | tail -20; }

[ "$failed" -eq 0 ] && say "ALL AGREE" || say "FAILED (see above)"
exit "$failed"
