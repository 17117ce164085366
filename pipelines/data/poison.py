"""The data-poisoning ablation: force a seeded fraction of labeling training reports to negative."""
from __future__ import annotations

import random
from dataclasses import replace

from pipelines.data.records import ReportRecord
from pipelines.vocabulary import LABEL_KEYS, NO, YES


def poisoned_labels() -> dict[str, str]:
    """Every disease label No, No Finding Yes: the label set a poisoned report receives."""
    return {k: (YES if k == "No Finding" else NO) for k in LABEL_KEYS}


def poison_reports(
    reports: list[ReportRecord], rate: float, seed: int
) -> tuple[list[ReportRecord], list[str]]:
    """Poison round(rate x n) reports chosen with Random(seed); returns records and poisoned ids.

    Only labels change; report text and impressions stay as they are, so the other tasks
    built from the same reports are untouched.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poison rate must be within [0, 1], got {rate}")
    count = round(rate * len(reports))
    chosen = set(random.Random(seed).sample(sorted(r.id for r in reports), count))
    bad = poisoned_labels()
    out = [replace(r, labels=dict(bad)) if r.id in chosen else r for r in reports]
    return out, sorted(chosen)
