"""The paper's two ablations, read from runs: the epoch trajectory and the labeling-poisoning study.

Trajectory: the metrics each checkpoint run logged (step = its epoch), one row per run and metric,
plus a wide table with one column per checkpoint epoch for the headline metrics.

Poisoning: runs that differ only in ``poison_rate`` form a group; each poisoned run is tested
against the group's unpoisoned run on the tasks that were not poisoned (harmonization: McNemar;
impression: paired tests). Unchanged results there mean no task-to-task influence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pandas as pd

from analysis.runs import RunInfo, align
from analysis.tasks import CompareOptions, analysis_for
from analysis.tasks.base import Records, Rows, Tables
from pipelines.tasks import PAPER_TASKS, headline_metric_keys, task_names

# Params that must be equal for runs to form one poisoning group (everything but poison_rate).
GROUP_PARAMS: tuple[str, ...] = (
    "model",
    "tasks",
    "data_fingerprint",
    "seed",
    "epoch",
    "epochs",
    "learning_rate",
    "lora_r",
)
UNPOISONED_TASKS: tuple[str, ...] = tuple(t for t in PAPER_TASKS if t != "labeling")  # poisoning alters labeling


# ---------------------------------------------------------------- epoch trajectory


def trajectory_rows(runs: list[RunInfo]) -> Rows:
    """Long table: one row per checkpoint run and task metric (``<task>/...`` or ``train/...``)."""
    prefixes = tuple(f"{t}/" for t in (*task_names(), "train"))
    rows = []
    for run in runs:
        if run.epoch is None:
            continue
        for name, value in sorted(run.metrics.items()):
            if name.startswith(prefixes):
                rows.append({**run.describe(), "task": name.split("/", 1)[0], "metric": name, "value": value})
    return rows


def trajectory_wide(rows: Rows, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Headline metrics with one ``epoch_<n>`` column per checkpoint (reruns averaged)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[frame["metric"].isin(headline_metric_keys() if metrics is None else metrics)]
    if frame.empty:
        return frame
    wide = frame.pivot_table(
        index=["model", "tasks", "poison_rate", "seed", "metric"],
        columns="epoch",
        values="value",
        aggfunc="mean",
    )
    wide.columns = [f"epoch_{int(c)}" for c in wide.columns]
    return wide.reset_index()


# ---------------------------------------------------------------- poisoning


def poisoning_groups(runs: list[RunInfo]) -> list[tuple[RunInfo, list[RunInfo]]]:
    """(unpoisoned run, poisoned runs) for every group with both; the latest run wins a duplicate."""
    groups: dict[tuple, dict[float, RunInfo]] = defaultdict(dict)
    for run in sorted(runs, key=lambda r: r.start_time):
        key = tuple(
            ",".join(sorted(run.tasks)) if p == "tasks" else run.params.get(p, "") for p in GROUP_PARAMS
        )
        groups[key][run.poison_rate] = run
    out = []
    for by_rate in groups.values():
        if 0.0 in by_rate and len(by_rate) > 1:
            out.append((by_rate[0.0], [by_rate[r] for r in sorted(by_rate) if r != 0.0]))
    return out


def poisoning_tables(
    runs: list[RunInfo],
    summaries: dict[tuple[str, str], dict],
    load: Callable[[str, str], Records | None],
    options: CompareOptions,
) -> Tables:
    """poisoning_metrics (headline per task against poison rate) and tests against the unpoisoned run.

    `summaries` maps (run id, task) to that task's summary row; `load` returns a run's predictions.
    """
    tables: Tables = defaultdict(list)
    for clean, poisoned in poisoning_groups(runs):
        for run in (clean, *poisoned):
            for task in task_names():
                summary = summaries.get((run.run_id, task))
                if summary is None:
                    continue
                for metric in analysis_for(task).headline:
                    base = summaries.get((clean.run_id, task), {}).get(metric, float("nan"))
                    tables["poisoning_metrics"].append(
                        {
                            **run.describe(),
                            "unpoisoned_run_id": clean.run_id,
                            "task": task,
                            "metric": metric,
                            "value": summary[metric],
                            "change": summary[metric] - base,
                        }
                    )
        for run in poisoned:
            for task in UNPOISONED_TASKS:
                ref, other = load(clean.run_id, task), load(run.run_id, task)
                if ref is None or other is None:
                    continue
                pair = align(task, clean.run_id, ref, run.run_id, other)
                for name, rows in analysis_for(task).compare(pair, options).items():
                    tables[f"poisoning_{name}"] += [
                        {**run.describe(), "unpoisoned_run_id": clean.run_id, **row} for row in rows
                    ]
    return dict(tables)
