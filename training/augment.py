"""Nuisance and geometric augmentation on uint8 HxWx3 tiles (numpy + Pillow, deterministic by a Generator).

Nuisances are what a real capture pair of an unchanged place differs by: illumination, contrast, gamma,
haze, blur, JPEG re-encoding, a shift of a few pixels, a sensor colour cast. They must not read as change.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

NUISANCES = ("brightness", "contrast", "gamma", "haze", "blur", "jpeg", "shift", "colour_cast")


def apply(img: np.ndarray, kind: str, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    x = img.astype(np.float32)
    if kind == "brightness":
        x = x * (1.0 + strength * rng.uniform(-0.3, 0.3))
    elif kind == "contrast":
        m = x.mean()
        x = (x - m) * (1.0 + strength * rng.uniform(-0.35, 0.35)) + m
    elif kind == "gamma":
        g = np.exp(strength * rng.uniform(-0.35, 0.35))
        x = 255.0 * (x / 255.0) ** g
    elif kind == "haze":
        a = strength * rng.uniform(0.05, 0.3)
        x = x * (1 - a) + a * rng.uniform(180, 240)
    elif kind == "blur":
        r = strength * rng.uniform(0.3, 1.2)
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(r)))
    elif kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=int(rng.integers(40, 90)))
        return np.asarray(Image.open(buf).convert("RGB"))
    elif kind == "shift":
        dy, dx = rng.integers(-3, 4, size=2)
        p = 3
        padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")
        h, w = img.shape[:2]
        return padded[p + dy:p + dy + h, p + dx:p + dx + w].copy()
    elif kind == "colour_cast":
        x = x * (1.0 + strength * rng.uniform(-0.15, 0.15, size=3)) + strength * rng.uniform(-12, 12, size=3)
    else:
        raise ValueError(f"unknown nuisance {kind}")
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def random_nuisance(img: np.ndarray, rng: np.random.Generator, max_kinds: int = 3) -> np.ndarray:
    kinds = rng.choice(len(NUISANCES), size=int(rng.integers(1, max_kinds + 1)), replace=False)
    for k in kinds:
        img = apply(img, NUISANCES[k], rng)
    return img


def geometric(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same flip and 90-degree rotation for every array of a pair (images and mask)."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(0, 1))
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out
