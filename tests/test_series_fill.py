"""Base-name fill of training series (--series-fill): which bases it fills, what it adds, what it never touches."""
from __future__ import annotations

import pytest

from pipelines.config import ConfigError, FinetuneConfig, cpu_train_limits
from pipelines.data.examples import build_examples
from pipelines.data.series_fill import base_occurs, default_fill_count, fill_series
from pipelines.data.sources import load_data
from pipelines.data.split import split_bundle, split_ids
from pipelines.data.synthetic_mri import ALL_BASES, generate_series
from pipelines.finetune import parse_args


def _count(base: str, descriptions: list[str]) -> int:
    """Descriptions holding `base` as whole words, found with str.find (independent of the module's regex)."""
    def normal(text: str) -> str:
        return " ".join(text.lower().replace("_", " ").split())

    want, hits = normal(base), 0
    for text in map(normal, descriptions):
        at = text.find(want)
        while at >= 0:
            before, after = text[at - 1:at], text[at + len(want):at + len(want) + 1]
            if not before.isalnum() and not after.isalnum():
                hits += 1
                break
            at = text.find(want, at + 1)
    return hits


@pytest.mark.parametrize(("base", "description", "expected"), [
    ("BOLD_resting", "2-bold resting sag", True),
    ("BOLD_resting", "BOLD_resting_MPR_Cor", True),
    ("MPR", "t1_mprage_sag", False),  # a word's prefix is not the word
    ("FA", "DTI fast", False),
    ("FA", "ep2d_diff_mddw_20_p2_FA_TRA", True),
    ("3-pl T2* FGRE", "Ax 3-pl T2* FGRE ARC", True),
    ("mIP_Images(SW)", "mip images(sw) tra", True),
])
def test_a_base_occurs_as_whole_words_whatever_the_case_and_separators(base, description, expected):
    assert base_occurs(base, description) is expected


@pytest.mark.parametrize("per_base", [1, 2])
def test_fill_brings_every_base_to_k_occurrences_and_adds_no_more(per_base):
    records = generate_series(400, seed=3)
    texts = [r.description for r in records]
    added = fill_series(records, per_base, seed=42)
    # every base that had fewer than k now has k or more, counted independently of the module
    after = texts + [r.description for r in added]
    for bases in ALL_BASES.values():
        for base in bases:
            assert _count(base, after) >= min(per_base, _count(base, texts) + per_base), base
    # one added series per missing occurrence, counted independently
    missing = sum(max(0, per_base - _count(b, texts)) for bases in ALL_BASES.values() for b in bases)
    assert len(added) == missing > 50  # the check has teeth: 400 series leave many bases out


def test_added_series_keep_the_generator_class_and_never_repeat_the_data():
    records = generate_series(400, seed=3)
    taken = {r.description for r in generate_series(1395, seed=0)}
    added = fill_series(records, 1, seed=42, taken=taken)
    owner = {base: label for label, bases in ALL_BASES.items() for base in bases}
    for record in added:
        assert record.label in {owner[b] for b in owner if _count(b, [record.description])}, record
    descriptions = [r.description for r in added]
    assert len(set(descriptions)) == len(descriptions)
    assert not set(descriptions) & (taken | {r.description for r in records})
    assert [r.id for r in added] == [f"fill-{i:05d}" for i in range(1, len(added) + 1)]


def test_fill_is_seeded_and_off_at_zero():
    records = generate_series(200, seed=0)
    first = [r.description for r in fill_series(records, 1, seed=42)]
    assert first == [r.description for r in fill_series(records, 1, seed=42)]
    assert first != [r.description for r in fill_series(records, 1, seed=7)]
    assert fill_series(records, 0, seed=42) == []
    with pytest.raises(ValueError, match="must be >= 0"):
        fill_series(records, -1, seed=42)


def test_series_fill_adds_training_series_only_before_the_noise_copies():
    bundle = load_data("synthetic?reports=40")
    splits = split_bundle(bundle, 0)
    tasks = ("labeling", "harmonization")
    plain = build_examples(bundle, splits, tasks, train_limit={"labeling": 8})
    filled = build_examples(bundle, splits, tasks, train_limit={"labeling": 8}, seed=5, series_fill=1,
                            series_noise=1)
    n = len(plain.train["harmonization"])
    assert filled.train["harmonization"][:n] == plain.train["harmonization"]
    fill = [e for e in filled.train["harmonization"][n:] if "~" not in e.id]
    noise = filled.train["harmonization"][n + len(fill):]
    assert [e.id for e in fill] == [f"harmonization/fill-{i:05d}" for i in range(1, len(fill) + 1)]
    assert [e.id for e in noise] == [f"{e.id}~noise1" for e in (*plain.train["harmonization"], *fill)]
    assert len(fill) == default_fill_count(1) == 92  # the default split's bases the training series lack
    assert not {e.prompt for e in fill} & {e.prompt for e in (*plain.train["harmonization"],
                                                             *plain.test["harmonization"])}
    assert filled.train["labeling"] == plain.train["labeling"] and filled.test == plain.test


def test_default_fill_count_is_the_default_training_split_s():
    series = generate_series(1395, seed=0)
    train = set(split_ids([s.id for s in series], 0).train)
    texts = [s.description for s in series if s.id in train]
    lacking = sum(1 for bases in ALL_BASES.values() for b in bases if _count(b, texts) == 0)
    assert default_fill_count(1) == lacking


def test_series_fill_option_the_preset_s_value_and_its_cost(monkeypatch):
    assert FinetuneConfig(series_fill=1).as_params()["series_fill"] == "1"
    assert FinetuneConfig().series_fill == 0  # the paper's data; the cpu preset's is 1
    with pytest.raises(ConfigError, match=r"--series-fill must be >= 0 \(0 = off\)"):
        FinetuneConfig(series_fill=-1)
    # the filled series (and their noise copies) are paid for in reports: 92 series of 50 tokens,
    # twice (noise), 2 epochs, at 228 tokens/s in bf16
    tasks = ("labeling", "harmonization", "impression")
    assert cpu_train_limits(tasks, "bf16", 1, 0) == "labeling=290,impression=110"
    assert cpu_train_limits(tasks, "bf16", 1, 1) == "labeling=260,impression=90"
    assert cpu_train_limits(("labeling",), "bf16", 1, 1) == cpu_train_limits(("labeling",), "bf16", 1, 0)
    monkeypatch.setattr("pipelines.models.cpu_bf16_units", lambda: True)
    monkeypatch.setattr("pipelines.train.cpu_speed.relative_speed", lambda precision: 1.0)
    assert parse_args(["--preset", "cpu"]).train_limits() == {"labeling": 260, "harmonization": 0, "impression": 90}
    assert parse_args(["--preset", "cpu", "--series-fill", "0"]).train_limits() == {
        "labeling": 290, "harmonization": 0, "impression": 110}
