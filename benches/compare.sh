#!/usr/bin/env bash
# Speed and memory of edge-change against the Python reference (issue 3), in one run:
#   1. one pair, whole process from start (model load included): edge-change vs reference.py
#   2. 500 tile pairs with --pairs: throughput of both
#   3. peak memory (max RSS) of `check` on a pair of 1024x1024 JPEGs
#   4. the encoder alone: `edge-change bench` next to onnxruntime on the same .onnx files
# Needs: a release build (cargo build --release), python3 with Pillow (and onnxruntime for 4),
# ../shared/data, training/reference.py (`python -m training.reference check`, same options as `check`). Uses hyperfine
# when installed, else repeats with /usr/bin/time. Prints a table; writes nothing into the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edge-change}
DATA=${DATA:-../shared/data}
REF=${REF:-training/reference.py}  # run as: python -m training.reference check ...
PY=${PY:-python3}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -d "$DATA" ] || { echo "$DATA not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"

# Inputs: 500 brunei pairs (128x128 tiles, paths relative to the CSV) and two 1024x1024 JPEGs.
"$PY" - "$DATA" "$work" <<'PY'
import csv, os, sys
from PIL import Image
data, work = sys.argv[1], sys.argv[2]
brunei = os.path.join(data, "brunei-s2")
with open(os.path.join(brunei, "pairs.csv")) as f, open(os.path.join(work, "pairs.csv"), "w") as out:
    out.write("before,after\n")
    for i, row in enumerate(csv.DictReader(f)):
        if i == 500:
            break
        out.write("%s,%s\n" % (os.path.join(brunei, row["before"]), os.path.join(brunei, row["after"])))
for side in ("before", "after"):
    img = Image.open(os.path.join(data, "sztaki", "Szada_1", side + ".bmp")).convert("RGB")
    img.resize((1024, 1024), Image.BILINEAR).save(os.path.join(work, side + ".jpg"), quality=90)
PY
one=("$work/before.jpg" "$work/after.jpg")

time_cmd() { # label, command...: mean wall seconds over 5 runs
  local label=$1; shift
  if command -v hyperfine >/dev/null; then
    hyperfine -N -w 1 -r 5 -i --export-json "$work/h.json" "$*" >/dev/null
    "$PY" -c "import json;r=json.load(open('$work/h.json'))['results'][0];print('%-34s %8.3f s' % ('$label', r['mean']))"
  else
    local start end
    start=$(date +%s.%N)
    for _ in 1 2 3 4 5; do "$@" >/dev/null 2>&1 || true; done
    end=$(date +%s.%N)
    "$PY" -c "print('%-34s %8.3f s' % ('$label', ($end - $start) / 5))"
  fi
}

echo "== one pair (1024x1024 JPEGs), whole process"
time_cmd "edge-change check" "$BIN" check "${one[@]}" --json
[ -f "$REF" ] && time_cmd "reference.py" "$PY" -m training.reference check "${one[@]}" --json

echo "== 500 tile pairs with --pairs"
time_cmd "edge-change check --pairs" "$BIN" check --pairs "$work/pairs.csv" --json
[ -f "$REF" ] && time_cmd "reference.py --pairs" "$PY" -m training.reference check --pairs "$work/pairs.csv" --json

echo "== peak memory of check on the 1024x1024 pair"
/usr/bin/time -v "$BIN" check "${one[@]}" --json 2>"$work/time.txt" >/dev/null || true
grep "Maximum resident" "$work/time.txt" | awk '{printf "max RSS %.1f MiB\n", $6/1024}'

echo "== encoder alone"
"$BIN" bench --runs 20
"$PY" - <<'PY' || echo "(onnxruntime not installed: pip install onnxruntime)"
import time, numpy as np, onnxruntime as ort
for name in ("encoder-fp32", "encoder-int8"):
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
    s = ort.InferenceSession("models/%s.onnx" % name, opts, providers=["CPUExecutionProvider"])
    feed = {"image": np.random.rand(1, 3, 128, 128).astype(np.float32), "mask": np.ones((1, 1, 128, 128), np.float32)}
    s.run(None, feed)
    t = []
    for _ in range(50):
        a = time.perf_counter(); s.run(None, feed); t.append((time.perf_counter() - a) * 1000)
    print("onnxruntime %-16s median %.2f ms/tile (1 thread)" % (name, float(np.median(t))))
PY
