"""Precision, recall, F1 and their macro averages from counts: the one definition that the task
scorers (what runs log) and analysis/ (tables, bootstraps) both call.

Zero-division policy: a class with tp + fp + fn == 0 (never in the references, never predicted)
scores 1.0 on precision, recall and F1, since there was nothing to get wrong. Otherwise a ratio
with a zero denominator is 0.0, which agrees with F1 = 2tp / (2tp + fp + fn).

Everything works elementwise on numpy arrays (classes on the last axis), so the bootstrap can
score thousands of resamples at once; scalar counts give scalar results. docs/statistics.md
explains why each task uses the average it does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from pipelines.registry import Registry

Counts = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
Value = float | np.ndarray  # a float for scalar counts, an array for arrays of counts


def precision_recall_f1(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> tuple[Value, Value, Value]:
    """(precision, recall, F1) of one class from its counts (elementwise for arrays)."""
    tp, fp, fn = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (tp, fp, fn)))
    claimed, actual = tp + fp, tp + fn
    empty = claimed + fn == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(empty, 1.0, np.where(claimed > 0, tp / claimed, 0.0))
        recall = np.where(empty, 1.0, np.where(actual > 0, tp / actual, 0.0))
        f1 = np.where(empty, 1.0, 2 * tp / (2 * tp + fp + fn))
    return precision[()], recall[()], f1[()]


# Which classes a macro average runs over: a mask over the class axis from the counts.
MACRO_AVERAGES: Registry[Counts] = Registry("macro average")
# The paper's labeling f1_macro: every class, absent ones scoring 1.0 by the policy above.
MACRO_AVERAGES.add("all", lambda tp, fp, fn: np.ones(np.shape(tp), dtype=bool))
# scikit-learn's f1_score(average="macro"): classes in the references or the predictions.
MACRO_AVERAGES.add("occurring", lambda tp, fp, fn: tp + fp + fn > 0)
# Classes with at least one positive reference: no free 1.0 for an absent label.
MACRO_AVERAGES.add("supported", lambda tp, fp, fn: tp + fn > 0)


def macro_f1(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, average: str = "all") -> Value:
    """Unweighted mean F1 over the classes (last axis) that `average` keeps; NaN where it keeps none."""
    tp, fp, fn = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (tp, fp, fn)))
    keep = MACRO_AVERAGES.get(average)(tp, fp, fn)
    f1 = precision_recall_f1(tp, fp, fn)[2]
    kept = keep.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(keep, f1, 0.0).sum(axis=-1) / kept
    return np.where(kept > 0, mean, np.nan)[()]
