"""Write tests/golden/*.json: reference results for named real images, for the Rust port's golden tests.

    python -m training.golden --data ../shared/data --out tests/golden

Each file: {"before", "after" (paths relative to the data folder), "mask": null, "tile", "model",
"result" (the check --json object, with relative paths), "embeddings": {"before": [[...]], "after": [[...]]}}.
Only numbers derived from the images are stored here, never the images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .reference import Encoder, analyse

CASES = [
    # name, before, after, tile
    ("brunei-val-gain", "brunei-s2/images/2018_01_patch_134.tif", "brunei-s2/images/2021_01_patch_134.tif", 128),
    ("brunei-val-steady", "brunei-s2/images/2019_01_patch_517.tif", "brunei-s2/images/2019_02_patch_517.tif", 128),
    ("oscd-paris-tiled", "oscd/paris/before/rgb.png", "oscd/paris/after/rgb.png", 128),
    ("sztaki-szada6-tiled", "sztaki/Szada_6/before.bmp", "sztaki/Szada_6/after.bmp", 128),
    ("sztaki-szada6-whole", "sztaki/Szada_6/before.bmp", "sztaki/Szada_6/after.bmp", 0),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.golden")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="tests/golden")
    ap.add_argument("--models", default="models")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    for model in ("encoder-fp32", "encoder-int8"):
        enc = Encoder(os.path.join(a.models, model + ".onnx"))
        for name, before, after, tile in CASES:
            bp, ap_ = os.path.join(a.data, before), os.path.join(a.data, after)
            if not (os.path.exists(bp) and os.path.exists(ap_)):
                print(f"skipped {name}: {before} or {after} missing", file=sys.stderr)
                continue
            result, emb = analyse(enc, bp, ap_, None, tile)
            result["before"], result["after"] = before, after
            result.pop("timings_ms")
            doc = {"before": before, "after": after, "mask": None, "tile": tile, "model": model,
                   "result": result, "embeddings": emb}
            path = os.path.join(a.out, f"{name}.{model}.json")
            with open(path, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.write("\n")
            print(f"{path}: changed={result['changed']} distance={result['distance']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
