"""Short, unique, readable names for the runs a report shows, and each run's model color.

A label starts with the model and adds only the facts that tell the report's runs apart (tasks,
epoch, poison rate, seed, role, a baseline's prompting); runs still alike get the start of their
run id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dashboards.colors import ColorMap
from pipelines.tasks import PAPER_TASKS

SECONDARY_TABLES = ("trajectory",)  # name prefixes of tables whose runs were not analyzed themselves


@dataclass
class RunEntry:
    """One run as the report shows it."""

    run_id: str
    model: str
    tasks: str = ""
    epoch: int | None = None
    poison_rate: float = 0.0
    seed: str = ""
    role: str = ""
    prompting: str = ""
    run_name: str = ""
    is_reference: bool = False
    params: dict[str, str] = field(default_factory=dict)  # from MLflow, when reachable
    label: str = ""
    color: str = ""

    @property
    def short_id(self) -> str:
        return self.run_id[:8]


def model_name(model: str) -> str:
    """A preset name as is; a local model folder by its last path part."""
    model = model.rstrip("/")
    return model.rsplit("/", 1)[-1] if "/" in model and model.startswith(("/", ".", "~")) else model


def tasks_text(tasks: str) -> str:
    """'labeling,harmonization,impression' -> 'all three'; otherwise the list with spaces."""
    names = [t for t in tasks.split(",") if t]
    return "all three" if set(names) >= set(PAPER_TASKS) else ", ".join(names)


def _tasks_part(tasks: str) -> str:
    names = [t for t in tasks.split(",") if t]
    if set(names) >= set(PAPER_TASKS):
        return "multi-task"
    return "+".join(names) + " only" if names else ""


def _parts(run: RunEntry) -> dict[str, str]:
    return {
        "tasks": _tasks_part(run.tasks),
        "epoch": f"e{run.epoch}" if run.epoch is not None else "",
        "poison": f"poison {run.poison_rate:.0%}" if run.poison_rate else "",
        "seed": f"seed {run.seed}" if run.seed else "",
        "role": run.role if run.role not in ("checkpoint", "") else "",
        "prompting": run.prompting,
    }


def assign_labels(runs: list[RunEntry]) -> None:
    """Fill each run's label in place (see the module docstring)."""
    parts = {r.run_id: _parts(r) for r in runs}
    varying = [k for k in ("tasks", "epoch", "poison", "seed", "role", "prompting")
               if len({p[k] for p in parts.values()}) > 1]
    for run in runs:
        extra = [parts[run.run_id][k] for k in varying if parts[run.run_id][k]]
        if "poison" not in varying and parts[run.run_id]["poison"]:
            extra.append(parts[run.run_id]["poison"])  # always say when a run was poisoned
        run.label = " · ".join([model_name(run.model) or run.short_id, *extra])
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:
            run.label = f"{run.label} · {run.short_id}"


class RunCatalog:
    """Every run the report mentions, by run id, with its label and model color."""

    def __init__(self, runs: Iterable[RunEntry], colors: ColorMap | None = None) -> None:
        self._runs = {r.run_id: r for r in runs}
        self.colors = colors or ColorMap(r.model for r in self._runs.values())
        assign_labels(list(self._runs.values()))
        for run in self._runs.values():
            run.color = self.colors.color(run.model)

    @classmethod
    def from_tables(
        cls,
        tables: Mapping[str, pd.DataFrame],
        reference_run_id: str | None = None,
        params: Mapping[str, Mapping[str, str]] | None = None,
    ) -> RunCatalog:
        """Runs from every table holding the describe columns; the first occurrence of a run wins.

        Runs met only in the trajectory tables (other checkpoint epochs) are labeled among
        themselves, so that they do not add an epoch to the analyzed runs' labels.
        """
        primary: dict[str, RunEntry] = {}
        secondary: dict[str, RunEntry] = {}
        for name, frame in tables.items():
            if "run_id" not in frame or "model" not in frame:
                continue
            target = secondary if name.startswith(SECONDARY_TABLES) else primary
            for row in frame.drop_duplicates("run_id").to_dict("records"):
                run_id = str(row["run_id"])
                if run_id in primary or run_id in secondary:
                    continue
                target[run_id] = RunEntry(
                    run_id=run_id,
                    model=_text(row.get("model")),
                    tasks=_text(row.get("tasks")),
                    epoch=_int(row.get("epoch")),
                    poison_rate=_float(row.get("poison_rate")),
                    seed=_text(row.get("seed")),
                    role=_text(row.get("role")),
                    prompting=_text(row.get("prompting")),
                    run_name=_text(row.get("run_name")),
                    is_reference=run_id == reference_run_id or _truthy(row.get("is_reference")),
                    params=dict((params or {}).get(run_id, {})),
                )
        catalog = cls(primary.values())
        assign_labels(list(secondary.values()))
        for run in secondary.values():
            run.color = catalog.colors.color(run.model)
            catalog._runs[run.run_id] = run
        return catalog

    def __getitem__(self, run_id: str) -> RunEntry:
        return self._runs[run_id]

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __iter__(self):
        return iter(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: str) -> RunEntry | None:
        return self._runs.get(run_id)

    def label(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        return run.label if run else run_id[:8]

    def color(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        return run.color if run else self.colors.color(run_id)

    @property
    def reference(self) -> RunEntry | None:
        return next((r for r in self._runs.values() if r.is_reference), None)

    def ordered(self, run_ids: Iterable[str]) -> list[RunEntry]:
        """The known runs among `run_ids`, the reference first, then by label: every figure lists
        runs in this one order."""
        chosen = {r for r in run_ids if r in self._runs}
        return sorted((self._runs[r] for r in chosen), key=lambda r: (not r.is_reference, r.label))

    def params_of(self, run_ids: Iterable[str]) -> list[dict[str, str]]:
        return [self._runs[r].params for r in run_ids if r in self._runs]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "1.0")


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0
