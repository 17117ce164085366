"""The frozen, seeded 80:20 split by record id, and its manifest.

Labeling and impression read the same reports, so they share one report split; series have
their own. The split depends only on the record ids and the seed, so every run of a study
with the same data and seed evaluates on exactly the same test examples.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.records import DataBundle

TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1  # of the train split, for hyperparameter search


@dataclass(frozen=True)
class Split:
    """Train and test ids of one dataset, each in a seeded order (take a prefix to subsample)."""

    train: tuple[str, ...]
    test: tuple[str, ...]


def split_ids(ids: list[str], seed: int, test_fraction: float = TEST_FRACTION) -> Split:
    """Seeded split: sort the ids, shuffle with Random(seed), the first 20% are the test set."""
    if len(set(ids)) != len(ids):
        raise ValueError("record ids must be unique to split")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    return Split(train=tuple(order[n_test:]), test=tuple(order[:n_test]))


def carve_validation(splits: dict[str, Split], fraction: float = VALIDATION_FRACTION) -> dict[str, Split]:
    """Train/validation splits carved from each train split (its seeded tail), test untouched.

    Used by sweeps: hyperparameters are chosen on validation examples, never on the test set.
    """
    out = {}
    for name, split in splits.items():
        n_val = max(1, round(len(split.train) * fraction)) if split.train else 0
        out[name] = Split(train=split.train[: len(split.train) - n_val], test=split.train[len(split.train) - n_val :])
    return out


def split_bundle(bundle: DataBundle, seed: int) -> dict[str, Split]:
    """One split per dataset ('reports', 'series')."""
    return {
        "reports": split_ids([r.id for r in bundle.reports], seed),
        "series": split_ids([s.id for s in bundle.series], seed),
    }


def manifest(bundle: DataBundle, splits: dict[str, Split], seed: int) -> dict:
    """The split as a JSON-able manifest: seed, data fingerprint, sources and ids per part."""
    return {
        "seed": seed,
        "test_fraction": TEST_FRACTION,
        "data": bundle.source,
        "fingerprint": bundle.fingerprint(),
        "notes": bundle.notes,
        "datasets": {name: {"train": list(s.train), "test": list(s.test)} for name, s in splits.items()},
    }


def load_manifest(path: Path) -> dict[str, Split]:
    """Read the splits back from a saved manifest (to evaluate on a study's frozen test set)."""
    try:
        data = json.loads(Path(path).read_text())
        return {name: Split(tuple(d["train"]), tuple(d["test"])) for name, d in data["datasets"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"split manifest {path}: not a valid manifest ({exc})") from exc
