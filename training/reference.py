"""The reference per-pair analysis of shared/DESIGN.md in plain Python (numpy, Pillow, onnxruntime).

It prints the same JSON as `edge-change check --json` and takes the same command line:
    python -m training.reference check BEFORE AFTER [--json] [--model FILE] [--threshold X] [--mask FILE]
    python -m training.reference check --pairs FILE.csv [--json]
It is what the Rust port is tested against (tests/golden/) and the baseline its speed is measured against,
so it favours being obviously right over being fast.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageOps

SCHEMA = 1
MAX_PIXELS = 40_000_000
HUE = (35, 85)
SATURATION_MIN = 40
VALUE_MIN = 40
MIN_DELTA = 0.05
# Directions are compared with this slack so that a delta of exactly 0.05, computed in floating point as
# 0.04999999, still counts as the 5 % the rule names.
EPS = 1e-9


class AnalysisError(Exception):
    pass


# ---------------------------------------------------------------------------------------------- decoding
def decode(path: str) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, EXIF orientation applied; truncated or oversized files refused."""
    if not os.path.exists(path):
        raise AnalysisError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise AnalysisError(f"{path}: empty file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise AnalysisError(f"{path}: {im.width}x{im.height} is over the {MAX_PIXELS} pixel limit")
            im.load()  # Pillow raises on truncation unless LOAD_TRUNCATED_IMAGES is set (it is not)
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
                return np.repeat(a[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except AnalysisError:
        raise
    except Exception as e:  # Pillow raises many types; the message names the file either way
        raise AnalysisError(f"{path}: cannot decode image: {e}") from None


def resize_rgb(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def resize_mask(mask: np.ndarray, w: int, h: int) -> np.ndarray:
    if mask.shape[1] == w and mask.shape[0] == h:
        return mask
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)
    return np.asarray(m) >= 128


def load_mask(path: str, w: int, h: int) -> np.ndarray:
    if not os.path.exists(path):
        raise AnalysisError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            m = np.asarray(im.convert("L")) >= 128
    except Exception as e:
        raise AnalysisError(f"{path}: cannot decode mask: {e}") from None
    if m.shape != (h, w):
        raise AnalysisError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}, the image is {w}x{h}")
    return m


# ---------------------------------------------------------------------------------------------- greenery
def rgb_to_hsv_opencv(img: np.ndarray) -> np.ndarray:
    """OpenCV's cvtColor(RGB2HSV) for uint8: H in 0..179 (degrees / 2), S and V in 0..255, rounded."""
    x = img.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=-1)
    mn = x.min(axis=-1)
    diff = v - mn
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(v > 0, diff * 255.0 / v, 0.0)
        h = np.where(v == r, 60.0 * (g - b) / diff,
                     np.where(v == g, 120.0 + 60.0 * (b - r) / diff, 240.0 + 60.0 * (r - g) / diff))
    h = np.where(diff == 0, 0.0, h)
    h = np.where(h < 0, h + 360.0, h)
    out = np.empty(img.shape, dtype=np.int32)
    hh = np.floor(h / 2.0 + 0.5).astype(np.int32)
    out[..., 0] = np.where(hh >= 180, hh - 180, hh)
    out[..., 1] = np.floor(s + 0.5).astype(np.int32)
    out[..., 2] = v.astype(np.int32)
    return out


def greenery(img: np.ndarray, mask: np.ndarray | None, hue=HUE, s_min=SATURATION_MIN, v_min=VALUE_MIN) -> float:
    hsv = rgb_to_hsv_opencv(img)
    green = ((hsv[..., 0] >= hue[0]) & (hsv[..., 0] <= hue[1]) & (hsv[..., 1] >= s_min) & (hsv[..., 2] >= v_min))
    if mask is not None:
        n = int(mask.sum())
        return float((green & mask).sum() / n) if n else 0.0
    return float(green.mean())


def direction(before: float, after: float, min_delta: float = MIN_DELTA) -> str:
    delta = after - before
    if delta >= min_delta - EPS:
        return "gain"
    if delta <= -min_delta + EPS and before >= min_delta - EPS:
        return "loss"
    return "none"


# ---------------------------------------------------------------------------------------------- tiles
def tile_origins(length: int, tile: int) -> list[int]:
    if tile <= 0 or length <= tile:
        return [0]
    out = list(range(0, length - tile, tile))
    out.append(length - tile)
    return out


def tiles(w: int, h: int, tile: int) -> list[tuple[int, int, int, int]]:
    tw = w if tile <= 0 else min(tile, w)
    th = h if tile <= 0 else min(tile, h)
    return [(x, y, tw, th) for y in tile_origins(h, tile) for x in tile_origins(w, tile)]


# ---------------------------------------------------------------------------------------------- encoder
class Encoder:
    def __init__(self, model_path: str):
        import onnxruntime as ort

        card_path = os.path.splitext(model_path)[0] + ".json"
        if not os.path.exists(model_path):
            raise AnalysisError(f"{model_path}: no such model file")
        if not os.path.exists(card_path):
            raise AnalysisError(f"{card_path}: no model card beside the model")
        with open(card_path) as f:
            self.card = json.load(f)
        with open(model_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != self.card["sha256"]:
            raise AnalysisError(f"{model_path}: sha256 {digest} does not match its card ({self.card['sha256']})")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        inp = self.card["input"]
        self.size = int(inp["size"])
        self.mean = float(inp["normalization"]["mean"])
        self.std = float(inp["normalization"]["std"])
        self.threshold = float(self.card["threshold"])
        veg = self.card["vegetation"]
        self.norm0, self.norm1 = float(veg["norm_at_0"]), float(veg["norm_at_1"])
        self.name = self.card["name"]
        self.sha256 = digest

    def embed(self, tile: np.ndarray, mask: np.ndarray) -> np.ndarray:
        s = self.size
        tile = resize_rgb(tile, s, s)
        mask = resize_mask(mask, s, s)
        m = mask.astype(np.float32)
        x = (tile.astype(np.float32) - self.mean) / self.std
        x = np.transpose(x, (2, 0, 1))[None] * m[None, None]
        out = self.session.run(None, {"image": x.astype(np.float32), "mask": m[None, None]})
        return out[0][0].astype(np.float32)

    def vegetation(self, norm: float) -> float:
        return float(min(1.0, max(0.0, (norm - self.norm0) / (self.norm1 - self.norm0))))


# ---------------------------------------------------------------------------------------------- analysis
def r4(x: float) -> float:
    return float(round(x, 6))


def analyse(enc: Encoder, before_path: str, after_path: str, mask_path: str | None = None, tile: int = 128,
            threshold: float | None = None) -> tuple[dict, dict]:
    """One pair: the check --json object, and the tile embeddings (for golden files)."""
    t0 = time.perf_counter()
    before = decode(before_path)
    after = decode(after_path)
    h, w = before.shape[:2]
    after = resize_rgb(after, w, h)
    mask = load_mask(mask_path, w, h) if mask_path else np.ones((h, w), bool)
    t1 = time.perf_counter()
    thr = enc.threshold if threshold is None or threshold <= 0 else threshold
    out_tiles, emb_b, emb_a = [], [], []
    veg_b = veg_a = weight = 0.0
    for (x, y, tw, th) in tiles(w, h, tile):
        m = mask[y:y + th, x:x + tw]
        n = int(m.sum())
        if n == 0:
            continue
        eb = enc.embed(before[y:y + th, x:x + tw], m)
        ea = enc.embed(after[y:y + th, x:x + tw], m)
        d = float(np.linalg.norm(eb - ea))
        out_tiles.append({"x": x, "y": y, "w": tw, "h": th, "distance": r4(d), "changed": d > thr})
        emb_b.append(eb.tolist())
        emb_a.append(ea.tolist())
        veg_b += n * enc.vegetation(float(np.linalg.norm(eb)))
        veg_a += n * enc.vegetation(float(np.linalg.norm(ea)))
        weight += n
    t2 = time.perf_counter()
    gb, ga = greenery(before, mask), greenery(after, mask)
    lb, la = (veg_b / weight, veg_a / weight) if weight else (0.0, 0.0)
    distance = max((t["distance"] for t in out_tiles), default=0.0)
    changed = any(t["changed"] for t in out_tiles)
    hsv_dir, learned_dir = direction(gb, ga), direction(lb, la)
    t3 = time.perf_counter()
    result = {
        "schema": SCHEMA, "before": before_path, "after": after_path,
        "changed": changed, "distance": r4(distance), "threshold": r4(thr),
        "tiles": out_tiles,
        "vegetation": {"before": r4(gb), "after": r4(ga), "delta": r4(ga - gb), "direction": hsv_dir},
        "learned": {"before": r4(lb), "after": r4(la), "delta": r4(la - lb), "direction": learned_dir},
        "direction": learned_dir if changed else "none",
        "model": {"name": enc.name, "sha256": enc.sha256},
        "timings_ms": {"decode": r4((t1 - t0) * 1e3), "encode": r4((t2 - t1) * 1e3), "total": r4((t3 - t0) * 1e3)},
    }
    return result, {"before": emb_b, "after": emb_a}


def default_model() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "models", "encoder-fp32.onnx")


def human(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error']}"
    v, l = r["vegetation"], r["learned"]
    lines = [f"{'CHANGED' if r['changed'] else 'no change'}: distance {r['distance']:.3f} vs threshold {r['threshold']:.3f}",
             f"greenery (hsv) {v['before']:.3f} -> {v['after']:.3f} ({v['direction']}); "
             f"learned {l['before']:.3f} -> {l['after']:.3f} ({l['direction']})"]
    for t in r["tiles"]:
        if t["changed"]:
            lines.append(f"  tile x={t['x']} y={t['y']} {t['w']}x{t['h']} distance {t['distance']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.reference")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("before", nargs="?")
    c.add_argument("after", nargs="?")
    c.add_argument("--pairs")
    c.add_argument("--json", action="store_true")
    c.add_argument("--model", default=default_model())
    c.add_argument("--threshold", type=float)
    c.add_argument("--mask")
    c.add_argument("--tile", type=int, default=128)
    a = p.parse_args(argv)
    try:
        enc = Encoder(a.model)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs: list[tuple[str, str, str | None]] = []
    if a.pairs:
        base = os.path.dirname(os.path.abspath(a.pairs))
        with open(a.pairs, newline="") as f:
            for row in csv.DictReader(f):
                def rel(v):
                    return None if not v else (v if os.path.isabs(v) else os.path.join(base, v))
                jobs.append((rel(row.get("before")), rel(row.get("after")), rel(row.get("mask"))))
    elif a.before and a.after:
        jobs.append((a.before, a.after, a.mask))
    else:
        p.error("check needs BEFORE AFTER or --pairs FILE.csv")
    code = 0
    for before, after, mask in jobs:
        try:
            r, _ = analyse(enc, before, after, mask, a.tile, a.threshold)
            if not a.pairs:
                code = 1 if r["changed"] else 0
        except AnalysisError as e:
            r = {"schema": SCHEMA, "before": before, "after": after, "error": str(e)}
            code = 2
        print(json.dumps(r, separators=(",", ":")) if a.json else human(r))
    return code


if __name__ == "__main__":
    sys.exit(main())
