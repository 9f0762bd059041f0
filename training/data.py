"""Loading ../shared/data into memory and turning it into labelled pairs, split by place.

Every sample is a pair of 128x128 RGB uint8 tiles of the same place, a validity mask common to both,
a change label (1 changed, 0 unchanged, -1 unknown) and a vegetation fraction per capture (NaN unknown).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

TILE = 128

# Validation places. Chosen as contiguous blocks so that a validation place has no training neighbour that
# overlaps it: brunei patch ids are <row><column> along the corridor; 133-138 is one end of row 1 and
# 517-519 a block of row 5. OSCD cities and SZTAKI sites are whole places.
VAL_BRUNEI = {"133", "134", "135", "136", "137", "138", "517", "518", "519"}
VAL_OSCD = {"beihai", "pisa", "nantes", "paris", "bercy"}
VAL_SZTAKI = {"Szada_6", "Tiszadob_3"}

# Label rules. A band between "unchanged" and "changed" is left out of the contrastive loss (and of the
# change metrics): a tile with 0.5 % new buildings is neither a clean positive nor a clean negative.
OSCD_CHANGED_FRAC = 0.02
OSCD_UNCHANGED_FRAC = 0.002
SZTAKI_CHANGED_FRAC = 0.02
SZTAKI_UNCHANGED_FRAC = 0.0
BRUNEI_UNCHANGED_DELTA = 0.03  # |veg delta| below this is "no change"; >= 0.05 (the rule) is change


@dataclass
class Pair:
    source: str
    place: str
    before: np.ndarray  # HxWx3 uint8
    after: np.ndarray
    mask: np.ndarray  # HxW bool, True = valid in both
    label: int  # 1 changed, 0 unchanged, -1 unknown
    veg_before: float  # NaN = unknown
    veg_after: float
    direction: str  # "gain" | "loss" | "none" | "" (unknown)
    name: str = ""


@dataclass
class Dataset:
    train: list[Pair] = field(default_factory=list)
    val: list[Pair] = field(default_factory=list)
    # single captures with their vegetation (for the magnitude term and the norm calibration)
    train_images: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)
    val_images: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)


def read_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def read_grey(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def tile_origins(length: int, tile: int = TILE) -> list[int]:
    """Tile origins along one axis, as in models/CONTRACT.md: the last tile is moved back to the edge."""
    if length <= tile:
        return [0]
    out = list(range(0, length - tile, tile))
    out.append(length - tile)
    return out


def _direction(before: float, after: float, min_delta: float = 0.05) -> str:
    delta = after - before
    if delta >= min_delta - 1e-9:
        return "gain"
    if delta <= -min_delta + 1e-9 and before >= min_delta - 1e-9:
        return "loss"
    return "none"


def load_brunei(root: str, ds: Dataset) -> None:
    base = os.path.join(root, "brunei-s2")
    masks: dict[str, np.ndarray] = {}
    images: dict[str, np.ndarray] = {}

    def load(rel_img: str) -> tuple[np.ndarray, np.ndarray]:
        if rel_img not in images:
            images[rel_img] = read_rgb(os.path.join(base, rel_img))
            masks[rel_img] = np.asarray(Image.open(os.path.join(base, rel_img.replace("images/", "masks/"))))
        return images[rel_img], masks[rel_img]

    with open(os.path.join(base, "pairs.csv")) as f:
        for row in csv.DictReader(f):
            b, mb = load(row["before"])
            a, ma = load(row["after"])
            valid = np.isin(mb, (4, 6)) & np.isin(ma, (4, 6))
            vb = float(((mb == 6) & valid).sum() / max(valid.sum(), 1))
            va = float(((ma == 6) & valid).sum() / max(valid.sum(), 1))
            delta = va - vb
            if row["direction"] != "none":
                label = 1
            elif abs(delta) < BRUNEI_UNCHANGED_DELTA:
                label = 0
            else:
                label = -1
            pair = Pair("brunei", row["patch"], b, a, valid, label, vb, va, row["direction"],
                        f"brunei-s2/{row['before']}|brunei-s2/{row['after']}")
            (ds.val if row["patch"] in VAL_BRUNEI else ds.train).append(pair)
    with open(os.path.join(base, "vegetation.csv")) as f:
        for row in csv.DictReader(f):
            if float(row["valid_frac"]) < 0.5:
                continue
            img, m = load(row["image"])
            valid = np.isin(m, (4, 6))
            item = (img, valid, float(row["veg_frac"]))
            (ds.val_images if row["patch"] in VAL_BRUNEI else ds.train_images).append(item)


def load_oscd(root: str, ds: Dataset) -> None:
    base = os.path.join(root, "oscd")
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with open(os.path.join(base, "tiles128.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        city = row["city"]
        if city not in cache:
            cache[city] = (read_rgb(os.path.join(base, city, "before", "rgb.png")),
                           read_rgb(os.path.join(base, city, "after", "rgb.png")))
        before, after = cache[city]
        y, x, s = int(row["y"]), int(row["x"]), int(row["size"])
        tb, ta = before[y:y + s, x:x + s], after[y:y + s, x:x + s]
        vb, va = float(row["veg_before"]), float(row["veg_after"])
        if row["change_frac"] != "":
            cf = float(row["change_frac"])
            if cf >= OSCD_CHANGED_FRAC or row["direction"] != "none":
                label = 1
            elif cf <= OSCD_UNCHANGED_FRAC:
                label = 0
            else:
                label = -1
        else:
            # unlabelled city: a vegetation change is a change; otherwise urban change is unknown
            label = 1 if row["direction"] != "none" else -1
        pair = Pair("oscd", city, tb, ta, np.ones((s, s), bool), label, vb, va, row["direction"],
                    f"oscd/{city}@{y},{x}")
        is_val = city in VAL_OSCD
        (ds.val if is_val else ds.train).append(pair)
        imgs = ds.val_images if is_val else ds.train_images
        imgs.append((tb, pair.mask, vb))
        imgs.append((ta, pair.mask, va))


def load_sztaki(root: str, ds: Dataset) -> None:
    base = os.path.join(root, "sztaki")
    for site in sorted(os.listdir(base)):
        d = os.path.join(base, site)
        if not os.path.isfile(os.path.join(d, "before.bmp")):
            continue
        before, after = read_rgb(os.path.join(d, "before.bmp")), read_rgb(os.path.join(d, "after.bmp"))
        change = read_grey(os.path.join(d, "change.bmp")) > 127
        h, w = change.shape
        if after.shape[:2] != (h, w) or before.shape[:2] != (h, w):
            continue
        for y in tile_origins(h):
            for x in tile_origins(w):
                cf = float(change[y:y + TILE, x:x + TILE].mean())
                label = 1 if cf >= SZTAKI_CHANGED_FRAC else (0 if cf <= SZTAKI_UNCHANGED_FRAC else -1)
                pair = Pair("sztaki", site, before[y:y + TILE, x:x + TILE], after[y:y + TILE, x:x + TILE],
                            np.ones((TILE, TILE), bool), label, float("nan"), float("nan"), "",
                            f"sztaki/{site}@{y},{x}")
                (ds.val if site in VAL_SZTAKI else ds.train).append(pair)


def load_all(root: str) -> Dataset:
    ds = Dataset()
    load_brunei(root, ds)
    load_oscd(root, ds)
    load_sztaki(root, ds)
    return ds


def summary(pairs: list[Pair]) -> dict:
    out: dict = {}
    for p in pairs:
        s = out.setdefault(p.source, {"pairs": 0, "changed": 0, "unchanged": 0, "unknown": 0,
                                      "gain": 0, "loss": 0, "places": set()})
        s["pairs"] += 1
        s[{1: "changed", 0: "unchanged", -1: "unknown"}[p.label]] += 1
        if p.direction in ("gain", "loss"):
            s[p.direction] += 1
        s["places"].add(p.place)
    for s in out.values():
        s["places"] = len(s["places"])
    return out


if __name__ == "__main__":
    import sys
    d = load_all(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    print("train", summary(d.train), len(d.train_images))
    print("val", summary(d.val), len(d.val_images))
