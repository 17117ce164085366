"""Generator descriptions for the base names the training series lack (`--series-fill k`; 0 = off).

The default data draws 1,395 descriptions from about 600 base names (pipelines/data/synthetic_mri.py),
so a rarer base can miss the training split entirely: in the default split 92 bases never occur
among the 1,116 training series, 59 of them Other (BOLD runs, field maps, spectroscopy, DTI maps,
localizers). A model then meets a whole family first at test time.
`--series-fill k` adds generator descriptions of every base that fewer than k training
descriptions contain, until each has k. Added series are training examples only; none equals a
description anywhere in the data (a test description is never copied into training), and each
keeps the generator's class (its classing policy: docs/series_description_rules.md).
"""
from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterable

from pipelines.data.records import SeriesRecord
from pipelines.data.synthetic_mri import ALL_BASES, describe_base

_TRIES = 20  # draws per added description before a base is left as it is


def fill_series(records: list[SeriesRecord], per_base: int, seed: int,
                taken: Iterable[str] = ()) -> list[SeriesRecord]:
    """Generated series that bring every generator base to `per_base` occurrences in `records`.

    A base occurs in a description when its words appear there in order, as whole words, whatever
    the case and separators (`base_occurs`). `taken` holds descriptions the output must not repeat
    (the data's other splits); records' own descriptions are never repeated either. Ids are
    `fill-00001`, ...; the same (records, per_base, seed, taken) gives the same list.
    """
    if per_base < 0:
        raise ValueError(f"series fill must be >= 0, got {per_base}")
    if per_base == 0:
        return []
    rng = random.Random(f"fill:{seed}")
    seen = {r.description for r in records} | set(taken)
    texts = [_normal(r.description) for r in records]
    out: list[SeriesRecord] = []
    for label, bases in ALL_BASES.items():
        for base in bases:
            missing = per_base - sum(1 for t in texts if _pattern(base).search(t))
            for _ in range(max(0, missing)):
                text = _new_description(rng, base, label, seen)
                if text is None:
                    break  # every draw repeats a description already in the data
                seen.add(text)
                out.append(SeriesRecord(id=f"fill-{len(out) + 1:05d}", description=text, label=label))
    return out


def _new_description(rng: random.Random, base: str, label: str, seen: set[str]) -> str | None:
    """A description of `base` not in `seen`, or None when _TRIES draws all repeat one."""
    for _ in range(_TRIES):
        text = describe_base(rng, base, label)
        if text not in seen:
            return text
    return None


def base_occurs(base: str, description: str) -> bool:
    """Whether `description` contains `base` as whole words, ignoring case and space/underscore."""
    return bool(_pattern(base).search(_normal(description)))


def _normal(text: str) -> str:
    return re.sub(r"[\s_]+", " ", text.lower()).strip()


@functools.cache
def _pattern(base: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z0-9]){re.escape(_normal(base))}(?![a-z0-9])")


@functools.cache
def default_fill_count(per_base: int) -> int:
    """How many series `--series-fill per_base` adds to the default data's training split (92 at 1),
    the figure the cpu preset's time budget pays for."""
    from pipelines.data.split import split_ids
    from pipelines.data.synthetic import DEFAULT_SEED, DEFAULT_SERIES
    from pipelines.data.synthetic_mri import generate_series

    series = generate_series(DEFAULT_SERIES, DEFAULT_SEED)
    train = set(split_ids([s.id for s in series], seed=0).train)
    return len(fill_series([s for s in series if s.id in train], per_base, seed=0,
                           taken={s.description for s in series}))
