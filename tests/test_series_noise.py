"""Site-noise copies of training series (--series-noise): what they add, what they keep, what they never touch."""
from __future__ import annotations

import re

import pytest

from pipelines.config import ConfigError, FinetuneConfig
from pipelines.data.examples import build_examples
from pipelines.data.series_noise import SITE_PREFIXES, SITE_SUFFIXES, noisy_copies
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle
from pipelines.data.synthetic_mri import ALL_BASES, generate_series

# Words the generator's banks use for one class only that name no contrast: a site adds them to
# any series ("Brain_View_FLAIR" is a FLAIR, "T1w_MPR_vNav" a T1, but not because of
# these words). Every other one-class word is a class cue the noise banks must not contain.
NEUTRAL = {"brain", "accelerated", "straight", "research", "head", "nav", "vnav", "routine", "fast", "study"}


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9]*", text)}


def test_noise_banks_hold_no_word_that_marks_a_class():
    owners: dict[str, set[str]] = {}
    for label, bases in ALL_BASES.items():
        for base in bases:
            for word in _words(base):
                owners.setdefault(word, set()).add(label)
    cues = {w for w, labels in owners.items() if len(labels) == 1} - NEUTRAL
    bank_words = set().union(*(_words(t) for t in (*SITE_PREFIXES, *SITE_SUFFIXES)))
    assert not bank_words & cues, f"noise tokens that name a class: {sorted(bank_words & cues)}"
    assert {"mprage", "fspgr", "swi", "swan", "lava", "tracew", "tof", "bold", "scout"} <= cues  # the check has teeth


def test_copies_keep_class_and_text_and_are_new():
    records = generate_series(300, seed=3)
    copies = noisy_copies(records, 2, seed=42)
    assert len(copies) == 600
    originals = {r.description for r in records}
    for j, copy in enumerate(copies):
        source = records[j // 2]
        assert copy.id == f"{source.id}~noise{j % 2 + 1}"
        assert copy.label == source.label
        assert source.description.lower() in copy.description.lower()  # tokens added or recased, none lost
        assert copy.description != source.description
    assert not originals & {c.description for c in copies}
    assert len({c.description for c in copies}) == len(copies)


def test_copies_are_seeded():
    records = generate_series(50, seed=0)
    first = [c.description for c in noisy_copies(records, 1, seed=42)]
    assert first == [c.description for c in noisy_copies(records, 1, seed=42)]
    assert first != [c.description for c in noisy_copies(records, 1, seed=7)]
    assert noisy_copies(records, 0, seed=42) == []
    with pytest.raises(ValueError, match="must be >= 0"):
        noisy_copies(records, -1, seed=42)


def test_series_noise_adds_training_series_only():
    bundle = load_data("synthetic")
    splits = split_bundle(bundle, 0)
    tasks = ("labeling", "harmonization")
    plain = build_examples(bundle, splits, tasks, train_limit={"labeling": 8, "harmonization": 40})
    noisy = build_examples(bundle, splits, tasks, train_limit={"labeling": 8, "harmonization": 40},
                           seed=5, series_noise=1)
    assert noisy.train["harmonization"][:40] == plain.train["harmonization"]
    added = noisy.train["harmonization"][40:]
    assert [e.id for e in added] == [f"{e.id}~noise1" for e in plain.train["harmonization"]]
    assert [e.reference for e in added] == [e.reference for e in plain.train["harmonization"]]
    assert noisy.train["labeling"] == plain.train["labeling"]
    assert noisy.test == plain.test
    # --series-noise-only: the copies in place of the descriptions as written, the rest unchanged
    only = build_examples(bundle, splits, tasks, train_limit={"labeling": 8, "harmonization": 40},
                          seed=5, series_noise=1, series_noise_only=True)
    assert only.train["harmonization"] == added
    assert {e.prompt for e in added}.isdisjoint(e.prompt for e in plain.train["harmonization"])
    assert only.train["labeling"] == plain.train["labeling"] and only.test == plain.test


def test_series_noise_option():
    assert FinetuneConfig(series_noise=1).as_params()["series_noise"] == "1"
    assert FinetuneConfig().series_noise == 0
    with pytest.raises(ConfigError, match=r"--series-noise must be >= 0 \(0 = off\)"):
        FinetuneConfig(series_noise=-1)
    assert FinetuneConfig(series_noise=1, series_noise_only=True).as_params()["series_noise_only"] == "True"
    with pytest.raises(ConfigError, match=r"--series-noise-only needs --series-noise >= 1"):
        FinetuneConfig(series_noise_only=True)
