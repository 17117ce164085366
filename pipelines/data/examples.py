"""From records and the frozen split to the train and test examples of each task."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipelines.data.poison import poison_reports
from pipelines.data.records import DataBundle
from pipelines.data.series_fill import fill_series
from pipelines.data.series_noise import noisy_copies
from pipelines.data.split import Split
from pipelines.tasks import get_task
from pipelines.tasks.base import Example


@dataclass
class TaskExamples:
    """Train and test examples per task, plus the ids poisoned for the ablation."""

    train: dict[str, list[Example]]
    test: dict[str, list[Example]]
    poisoned_ids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """n_train/<task> and n_test/<task> figures for logging."""
        out = {f"n_train/{t}": len(v) for t, v in self.train.items()}
        out.update({f"n_test/{t}": len(v) for t, v in self.test.items()})
        return out


def _records_by_id(bundle: DataBundle) -> dict[str, dict]:
    return {"reports": {r.id: r for r in bundle.reports}, "series": {s.id: s for s in bundle.series}}


def _usable(task_name: str, by_id: dict, ids: tuple[str, ...], limit: int) -> list:
    """Records of `ids` the task can use, capped at `limit` (0 = all).

    Split ids are already in a seeded order, so a prefix is a seeded random subsample.
    """
    task = get_task(task_name)
    records = [by_id[i] for i in ids if task.include(by_id[i])]
    return records if limit == 0 else records[:limit]


def _require(examples: list[Example], task: str, part: str, bundle: DataBundle) -> list[Example]:
    if not examples:
        dataset = get_task(task).dataset
        source = bundle.notes.get(f"{dataset}_source", bundle.source)
        raise ValueError(f"task {task!r} has no {part} examples in data {source!r}; it needs at least one")
    return examples


def build_test_examples(
    bundle: DataBundle, ids: dict[str, tuple[str, ...]], tasks: tuple[str, ...], eval_limit: int = 0
) -> dict[str, list[Example]]:
    """Evaluation examples per task from the given record ids per dataset."""
    by_dataset = _records_by_id(bundle)
    out = {}
    for name in tasks:
        task = get_task(name)
        records = _usable(name, by_dataset[task.dataset], ids[task.dataset], eval_limit)
        out[name] = _require([task.build_example(r) for r in records], name, "test", bundle)
    return out


def build_examples(
    bundle: DataBundle,
    splits: dict[str, Split],
    tasks: tuple[str, ...],
    *,
    train_limit: int | Mapping[str, int] = 0,
    eval_limit: int = 0,
    poison_rate: float = 0.0,
    seed: int = 0,
    series_noise: int = 0,
    series_fill: int = 0,
    series_noise_only: bool = False,
) -> TaskExamples:
    """Examples for each task: train from the train split, test from the test split.

    train_limit: one cap for every task, or a cap per task (a missing task: all); 0 = all.
    Poisoning applies to the labeling task's training reports only. The tasks that read series
    first get `series_fill` generator descriptions of each base their training series lack
    (pipelines/data/series_fill.py; never a description of the data), then `series_noise`
    site-noise copies of every training series (pipelines/data/series_noise.py), added to the
    series or, with `series_noise_only`, in their place. `seed` picks the poisoned reports, the
    fill and the noise.
    """
    by_dataset = _records_by_id(bundle)
    test_ids = {name: split.test for name, split in splits.items()}
    result = TaskExamples(train={}, test=build_test_examples(bundle, test_ids, tasks, eval_limit))
    for name in tasks:
        task = get_task(name)
        limit = train_limit.get(name, 0) if isinstance(train_limit, Mapping) else train_limit
        records = _usable(name, by_dataset[task.dataset], splits[task.dataset].train, limit)
        if name == "labeling" and poison_rate > 0:
            records, result.poisoned_ids = poison_reports(records, poison_rate, seed)
        if task.dataset == "series" and series_fill:
            records = records + fill_series(records, series_fill, seed, {s.description for s in bundle.series})
        if task.dataset == "series" and series_noise:
            noisy = noisy_copies(records, series_noise, seed)
            records = noisy if series_noise_only else records + noisy
        result.train[name] = _require([task.build_example(r) for r in records], name, "train", bundle)
    return result
