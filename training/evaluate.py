"""Metrics for the model card: ROC AUC, balanced accuracy at a threshold, threshold sweep, direction accuracy."""
from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random changed pair scores above a random unchanged one (ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    rp = r[: len(pos)].sum()
    return float((rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def balanced_accuracy(scores, labels, threshold: float) -> float:
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pred = scores > threshold
    tpr = pred[labels == 1].mean() if (labels == 1).any() else float("nan")
    tnr = (~pred[labels == 0]).mean() if (labels == 0).any() else float("nan")
    return float((tpr + tnr) / 2)


def best_threshold(scores, labels) -> tuple[float, float]:
    """The threshold maximising balanced accuracy, swept over midpoints between sorted scores."""
    s = np.unique(np.asarray(scores, float))
    cands = np.concatenate([[s[0] - 1e-3], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-3]])
    best = max(cands, key=lambda t: balanced_accuracy(scores, labels, t))
    return float(best), balanced_accuracy(scores, labels, best)
