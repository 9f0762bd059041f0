#!/usr/bin/env bash
# Measures what the README reports for a board: time from start to READY=1 (through a notify
# socket, as systemd would see it), and the daemon's resident memory (VmRSS, VmHWM) with one
# directory source and one site after a few captures.
# Usage: deploy/measure.sh [BINARY] [MODEL]   (defaults: target/release/edge-change, the fp32 encoder)
# Run on the board itself for board numbers; `qemu-aarch64-static -L …` numbers mean little.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/edge-change}
model=${2:-$PWD/models/encoder-fp32.onnx}
[ -x "$bin" ] || { echo "measure: $bin missing (cargo build --release)" >&2; exit 1; }
python3 - "$bin" "$model" <<'PY'
import os, shutil, signal, socket, subprocess, sys, tempfile, time
from PIL import Image, ImageDraw
bin, model = sys.argv[1:3]
work = tempfile.mkdtemp()
inbox = os.path.join(work, "in"); os.makedirs(inbox)
with open(os.path.join(work, "config.toml"), "w") as f:
    f.write(f'state_dir = "{work}/state"\n[model]\npath = "{model}"\n[mqtt]\nurl = ""\n'
            f'[sources.field]\ntype = "directory"\npath = "{inbox}"\nsettle = "300ms"\n')
sock_path = os.path.join(work, "notify")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); sock.bind(sock_path)
env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="120000000")
t0 = time.monotonic()
proc = subprocess.Popen([bin, "run", "--config", os.path.join(work, "config.toml")], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
env["WATCHDOG_PID"] = str(proc.pid)
sock.settimeout(60)
ready = None
while ready is None:
    msg = sock.recv(4096).decode()
    if "READY=1" in msg.split("\n"):
        ready = time.monotonic() - t0
def status(key):
    for line in open(f"/proc/{proc.pid}/status"):
        if line.startswith(key): return int(line.split()[1]) / 1024
print(f"measure: READY=1 after {ready * 1000:.0f} ms; RSS at READY {status('VmRSS'):.1f} MiB")
# Captures: a 1024x768 field and edits of it (48 tiles of 128 px each).
base = Image.new("RGB", (1024, 768), (60, 120, 50))
d = ImageDraw.Draw(base)
for i in range(0, 1024, 32): d.line([(i, 0), (1023 - i, 767)], fill=(80, 140 + i % 60, 40), width=5)
sock.settimeout(2)
for n in range(6):
    img = base.copy(); ImageDraw.Draw(img).rectangle([40 * n, 50, 40 * n + 200, 300], fill=(150, 120, 90))
    tmp = os.path.join(work, f"c{n}.png"); img.save(tmp); os.rename(tmp, os.path.join(inbox, f"{n:04}.png"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:   # STATUS=captures N, … after each capture
        try: msg = sock.recv(4096).decode()
        except socket.timeout: continue
        if f"captures {n + 1}," in msg: break
print(f"measure: after 6 captures (1024x768, 48 tiles): VmRSS {status('VmRSS'):.1f} MiB, "
      f"peak VmHWM {status('VmHWM'):.1f} MiB")
time.sleep(5)
print(f"measure: 5 s idle later: VmRSS {status('VmRSS'):.1f} MiB")
proc.send_signal(signal.SIGTERM); code = proc.wait(30)
print(f"measure: exit {code} after SIGTERM")
shutil.rmtree(work)
PY
