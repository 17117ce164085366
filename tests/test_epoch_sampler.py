"""The training sampler: every example once per epoch, batches of similar length, order fixed by (seed, epoch)."""
from __future__ import annotations

import random

import pytest

from pipelines.train.sampler import EpochSeededLengthSampler


def _dataset(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"input_ids": [0] * (rng.choice([60, 200, 330]) + rng.randint(0, 20))} for _ in range(n)]


def _padding(order: list[int], lengths: list[int], batch: int) -> float:
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


@pytest.mark.parametrize(("n", "batch"), [(18, 4), (72, 2), (5, 4), (1, 2), (250, 4)])
def test_each_example_once_longest_batch_first_short_batch_last(n, batch):
    data = _dataset(n)
    lengths = [len(d["input_ids"]) for d in data]
    order = list(EpochSeededLengthSampler(batch, data, seed=3))
    assert sorted(order) == list(range(n))
    assert max(lengths[i] for i in order[:batch]) == max(lengths)
    if n % batch:  # the data loader cuts the order into batches again: the short one must be last
        last = order[-(n % batch):]
        assert all(lengths[i] <= lengths[j] for i in last for j in order[:batch])


def test_small_datasets_are_grouped_unlike_the_stock_sampler():
    # The stock sampler sorts mega-batches sized for four per epoch: one batch on 18 examples.
    data = _dataset(18)
    lengths = [len(d["input_ids"]) for d in data]
    grouped = _padding(list(EpochSeededLengthSampler(4, data, seed=0)), lengths, 4)
    shuffled = sum(_padding(random.Random(s).sample(range(18), 18), lengths, 4) for s in range(20)) / 20
    assert grouped < 0.5 * shuffled


def test_order_depends_only_on_seed_and_epoch():
    data = _dataset(40)
    a, b = EpochSeededLengthSampler(4, data, seed=7), EpochSeededLengthSampler(4, data, seed=7)
    a.set_epoch(2)
    list(b)  # consuming other epochs first changes nothing
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
