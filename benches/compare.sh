#!/usr/bin/env bash
# Speed and memory of edge-change against the Python reference (issue 3), in one run:
#   1. one pair, whole process from start (model load included): edge-change vs reference.py
#   2. 500 tile pairs with --pairs: throughput of both
#   3. peak memory (max RSS) of `check` on a pair of 1024x1024 JPEGs
#   4. the encoder alone: `edge-change bench` next to onnxruntime on the same .onnx files
# Needs: a release build (cargo build --release), python3 with training/requirements-reference.txt,
# ../shared/data, training/reference.py (`python -m training.reference check`, same options as `check`).
# Uses hyperfine when installed (apt-get install hyperfine), else times the runs itself. Medians and
# ratios of one run; RUNS=N sets the runs per command (default 7). Writes nothing into the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/edge-change}
DATA=${DATA:-../shared/data}
PY=${PY:-python3}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -d "$DATA" ] || { echo "$DATA not found" >&2; exit 2; }
# Absolute: the pairs CSV lives in a temporary folder, and its relative paths would be read from there.
DATA=$(cd "$DATA" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The int8 kernels tract picks depend on these (VNNI on x86-64, dot-product on aarch64).
flags=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_vnni|avx_vnni|asimddp|i8mm' | xargs || true)
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), [$flags], $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1 /proc/loadavg)"

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
# The same rows with every capture a file of its own (copies in the temporary folder): the pairs
# share captures (500 rows name 84 files), which --pairs encodes once; this shows it without.
import shutil
with open(os.path.join(work, "pairs.csv")) as f, open(os.path.join(work, "pairs-unshared.csv"), "w") as out:
    out.write(next(f))
    for i, line in enumerate(f):
        names = []
        for side, path in zip(("b", "a"), line.strip().split(",")):
            copy = os.path.join(work, "unshared", "%03d%s.tif" % (i, side))
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copyfile(path, copy)
            names.append(copy)
        out.write(",".join(names) + "\n")
for side in ("before", "after"):
    img = Image.open(os.path.join(data, "sztaki", "Szada_1", side + ".bmp")).convert("RGB")
    img.resize((1024, 1024), Image.BILINEAR).save(os.path.join(work, side + ".jpg"), quality=90)
PY
one=("$work/before.jpg" "$work/after.jpg")
tile=("$DATA/brunei-s2/images/2018_01_patch_019.tif" "$DATA/brunei-s2/images/2018_02_patch_019.tif")
RUNS=${RUNS:-7}

time_cmd() { # label, command...: median wall seconds over $RUNS runs, kept in $work/<label>
  local label=$1; shift
  # hyperfine -i below ignores exit code 1 (= change); an error (2) would time a failure.
  local rc=0
  "$@" >"$work/out.txt" 2>"$work/err.txt" || rc=$?
  if [ "$rc" -gt 1 ] || grep -q '"error"' "$work/out.txt"; then
    echo "$label failed (exit $rc): $(head -c 300 "$work/err.txt")" >&2
    exit 1
  fi
  if command -v hyperfine >/dev/null; then
    hyperfine -N -w 1 -r "$RUNS" -i --export-json "$work/h.json" "$*" >/dev/null 2>&1
    "$PY" -c "import json;print(json.load(open('$work/h.json'))['results'][0]['median'])" >"$work/$label"
  else
    "$PY" - "$RUNS" "$@" >"$work/$label" <<'PY'
import statistics, subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
t = []
for _ in range(runs):
    a = time.perf_counter(); subprocess.run(cmd, capture_output=True); t.append(time.perf_counter() - a)
print(statistics.median(t))
PY
  fi
  printf '%-28s %8.3f s (median of %s)\n' "$label" "$(cat "$work/$label")" "$RUNS"
}
ratio() { # label of the faster, label of the slower
  "$PY" -c "print('  ratio %.2fx' % (float(open('$work/$2').read()) / float(open('$work/$1').read())))"
}

echo "== one pair of 1024x1024 JPEGs (64 tiles each), whole process from start"
time_cmd ours-1024 "$BIN" check "${one[@]}" --json
time_cmd reference-1024 "$PY" -m training.reference check "${one[@]}" --json
ratio ours-1024 reference-1024

echo "== one pair of 128x128 tiles (brunei), whole process from start"
time_cmd ours-tile "$BIN" check "${tile[@]}" --json
time_cmd reference-tile "$PY" -m training.reference check "${tile[@]}" --json
ratio ours-tile reference-tile

echo "== 500 tile pairs with --pairs (edge-change on every core, the reference on one); then unshared"
time_cmd ours-pairs "$BIN" check --pairs "$work/pairs.csv" --json
time_cmd reference-pairs "$PY" -m training.reference check --pairs "$work/pairs.csv" --json
ratio ours-pairs reference-pairs
time_cmd ours-pairs-unshared "$BIN" check --pairs "$work/pairs-unshared.csv" --json
time_cmd reference-unshared "$PY" -m training.reference check --pairs "$work/pairs-unshared.csv" --json
ratio ours-pairs-unshared reference-unshared

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
