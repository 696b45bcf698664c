"""Every figure the project reports about a classifier, and its intervals, in one place.

Classification figures (`class_metrics`): accuracy, the confusion matrix (rows true, columns
predicted), per-class recall, unweighted average recall (UAR: the mean recall of the classes
present, the field's figure for unbalanced emotion corpora) and macro-F1. `clip_metrics`
reports them pooled over clips, by gender, with 95 % intervals: Wilson for accuracy, and a
bootstrap over speakers (clips of one speaker are not independent) for accuracy, UAR and
macro-F1.

Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
statistical inference", JASA 22): unlike the normal approximation it stays inside [0, 1] and
behaves at k = 0 or k = n, which matters here because accuracy under attack is often near 0.
Difference of two independent proportions: Newcombe's hybrid score interval (method 10 of
Newcombe 1998, "Interval estimation for the difference between independent proportions",
Statistics in Medicine 17), built from the two Wilson intervals."""
from __future__ import annotations

import math

import numpy as np

from ser_core.errors import ParameterError

Z95 = 1.959963984540054
BOOTSTRAP = 2000  # speaker-bootstrap resamples


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95 % by default)."""
    if n < 0 or k < 0 or k > n:
        raise ParameterError(f"wilson: k={k}, n={n} (accepted: 0 <= k <= n)")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); the closed form leaves a rounding residue
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def newcombe_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """(p1 - p2, low, high): Newcombe's hybrid score interval for the difference of two
    independent proportions. An interval excluding 0 means the two differ at that level."""
    if n1 == 0 or n2 == 0:
        return (0.0, -1.0, 1.0)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (d, max(-1.0, low), min(1.0, high))


def wilson_half_width(n: int, z: float = Z95) -> float:
    """The widest half-width a 95 % Wilson interval on n examples can have (at k = n / 2):
    what n guarantees whatever the accuracy turns out to be."""
    if n < 1:
        return 0.5
    return max((hi - lo) / 2 for lo, hi in (wilson(n // 2, n, z), wilson((n + 1) // 2, n, z)))


def wilson_size(margin: float, z: float = Z95) -> int:
    """The fewest examples whose 95 % Wilson interval is within +/- `margin` at any accuracy."""
    if not 0 < margin < 0.5:
        raise ParameterError(f"wilson_size: margin={margin!r} (accepted: 0 < margin < 0.5)")
    n = max(1, int((z / (2 * margin)) ** 2 - z * z) - 1)  # just under the closed-form root
    while wilson_half_width(n, z) > margin:
        n += 1
    return n


# --- classification figures ------------------------------------------------------------------
def accuracy(labels: np.ndarray, pred: np.ndarray) -> float | None:
    """Share of `pred` equal to `labels` (None for no examples)."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    return float(np.mean(pred == labels)) if len(labels) else None


def confusion(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows the true class, columns the predicted one."""
    cm = np.zeros((n_classes, n_classes), int)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def class_metrics(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> dict:
    """accuracy, uar and macro_f1 over the classes present in `labels` (NaN when none is),
    per-class `recall` (NaN for a class absent from `labels`) and the confusion matrix `cm`."""
    cm = confusion(labels, pred, n_classes)
    support = cm.sum(1)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    predicted = cm.sum(0)
    precision = np.where(predicted > 0, np.diag(cm) / np.maximum(predicted, 1), 0.0)
    r = np.nan_to_num(recall)
    f1 = np.where(precision + r > 0, 2 * precision * r / np.maximum(precision + r, 1e-12), 0.0)
    present = support > 0
    return {"accuracy": float(np.trace(cm) / max(1, cm.sum())),
            "uar": float(np.nanmean(recall[present])) if present.any() else float("nan"),
            "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
            "recall": recall, "cm": cm}


def uar(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted average recall over the classes present in `labels`."""
    return class_metrics(labels, pred, n_classes)["uar"]


def speaker_bootstrap(labels: np.ndarray, pred: np.ndarray, speakers: np.ndarray, n_classes: int,
                      keys=("accuracy", "uar", "macro_f1"), n: int = BOOTSTRAP,
                      seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of `class_metrics` figures over `n` resamples of the speakers
    (with replacement, each drawn speaker bringing all of their clips)."""
    spk = sorted(set(speakers))
    by = {s: np.flatnonzero(speakers == s) for s in spk}
    rng = np.random.default_rng(seed)
    boots = {key: [] for key in keys}
    for _ in range(n):
        idx = np.concatenate([by[spk[i]] for i in rng.integers(0, len(spk), len(spk))])
        c = class_metrics(labels[idx], pred[idx], n_classes)
        for key in boots:
            boots[key].append(c[key])
    return {key: [float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))]
            for key, vals in boots.items()}


def clip_metrics(labels: np.ndarray, pred: np.ndarray, genders: np.ndarray, speakers: np.ndarray,
                 class_names, seed: int = 0) -> dict:
    """Pooled clip-level figures with 95 % intervals (see the module docstring)."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    k = len(class_names)
    core = class_metrics(labels, pred, k)
    n = len(labels)
    correct = int(np.sum(labels == pred))
    out = {"n_clips": int(n), "n_speakers": int(len(set(speakers))),
           "accuracy": core["accuracy"], "accuracy_wilson95": list(wilson(correct, n)),
           "uar": core["uar"], "macro_f1": core["macro_f1"],
           "per_class_recall": {c: (None if np.isnan(r) else float(r))
                                for c, r in zip(class_names, core["recall"])},
           "min_class_recall": float(np.nanmin(core["recall"])),
           "confusion": {"labels": list(class_names), "matrix": core["cm"].tolist()}}
    for g in ("male", "female"):
        m = genders == g
        c = int(np.sum(labels[m] == pred[m]))
        out[g] = {"n_clips": int(m.sum()), "accuracy": c / max(1, int(m.sum())),
                  "accuracy_wilson95": list(wilson(c, int(m.sum()))),
                  "uar": class_metrics(labels[m], pred[m], k)["uar"] if m.any() else None}
    for key, ci in speaker_bootstrap(labels, pred, speakers, k, seed=seed).items():
        out[f"{key}_speaker_bootstrap95"] = ci
    return out


def summarise_clips(name: str, clips: list[dict], class_names, extra: dict | None = None) -> dict:
    """`clip_metrics` of clip records ({"label", "probs", "gender", "speaker"}: each clip decided
    by its most probable class), named `name`, with `extra` fields."""
    labels = np.array([c["label"] for c in clips])
    pred = np.array([int(np.argmax(c["probs"])) for c in clips])
    genders = np.array([c["gender"] for c in clips])
    speakers = np.array([c["speaker"] for c in clips])
    return {"name": name, **clip_metrics(labels, pred, genders, speakers, class_names),
            **(extra or {})}
