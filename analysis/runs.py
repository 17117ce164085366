"""Reading the MLflow store: run selection, the reference run, cached prediction artifacts, alignment.

MLflow params are strings, and search filters compare them as strings: a filter value must be
written exactly as the producer logged it (``epoch=100``, ``poison_rate=0.0``). The reference
spec, applied here in Python, is more forgiving (``0`` matches ``0.0``; ``tasks`` compares as a set).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from pipelines.runs import schema
from pipelines.tasks import PAPER_TASKS

DEFAULT_REFERENCE_MODEL = "smollm2-135m"
DEFAULT_CACHE_DIR = Path("outputs/analysis-cache")
PARENT_TAG = "mlflow.parentRunId"


class SelectionError(ValueError):
    """No usable runs, an unknown experiment, or an ambiguous / missing reference run."""


class AlignmentError(ValueError):
    """Two runs were evaluated on different test sets, so a paired comparison would be meaningless."""


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunInfo:
    """The parts of an MLflow run the analysis reads (params are strings, as logged)."""

    run_id: str
    run_name: str
    experiment_id: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    artifact_uri: str = ""

    @classmethod
    def from_mlflow(cls, run: Run) -> RunInfo:
        return cls(
            run_id=run.info.run_id,
            run_name=run.info.run_name or "",
            experiment_id=run.info.experiment_id,
            start_time=int(run.info.start_time or 0),
            tags=dict(run.data.tags),
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            artifact_uri=run.info.artifact_uri or "",
        )

    @property
    def role(self) -> str:
        return self.tags.get(schema.ROLE, "")

    @property
    def study(self) -> str:
        return self.tags.get("study", "")

    @property
    def model(self) -> str:
        return self.params.get("model", "")

    @property
    def tasks(self) -> tuple[str, ...]:
        return parse_tasks(self.params.get("tasks", ""))

    @property
    def epoch(self) -> int | None:
        return _as_int(self.params.get("epoch"))

    @property
    def poison_rate(self) -> float:
        """The labeling poison rate; runs that do not log one are unpoisoned."""
        value = _as_float(self.params.get("poison_rate", "0"))
        return 0.0 if value is None else value

    def describe(self) -> dict[str, Any]:
        """The identifying columns every per-run table row starts with."""
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "role": self.role,
            "model": self.model,
            "tasks": ",".join(self.tasks),
            "epoch": self.epoch,
            "poison_rate": self.poison_rate,
            "seed": self.params.get("seed", ""),
            "prompting": self.params.get("prompting", ""),  # baselines: zero-shot, few-shot, ...
        }


def parse_tasks(value: str) -> tuple[str, ...]:
    """The tasks param ("labeling,impression") as a tuple, in the order written."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


def parse_key_values(specs: Iterable[str]) -> dict[str, str]:
    """``key=value`` pairs from CLI strings; one string may hold several separated by ';'.

    ';' (not ',') separates pairs because the tasks param itself holds commas.
    """
    pairs: dict[str, str] = {}
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(";"))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected key=value, got {item!r} (separate several pairs with ';')")
            pairs[key.strip()] = value.strip()
    return pairs


# ---------------------------------------------------------------- selection


@dataclass(frozen=True)
class RunSelection:
    """Which runs to analyze: experiment by name (None: every experiment), study tag, role, params.

    `role` may list several roles separated by commas ("checkpoint,baseline"): one search each.
    """

    experiment: str | None = None
    study: str | None = None
    role: str | None = "checkpoint"
    params: dict[str, str] = field(default_factory=dict)
    finished_only: bool = True

    @property
    def roles(self) -> list[str | None]:
        """The roles searched; [None] means any role."""
        return [r.strip() for r in self.role.split(",") if r.strip()] if self.role else [None]

    def filter_string(self, role: str | None = None) -> str:
        """The MLflow search filter for one role (default: the first); param values are quoted strings."""
        role = role or self.roles[0]
        clauses = []
        if self.finished_only:
            clauses.append("attributes.status = 'FINISHED'")
        if role:
            clauses.append(f"tags.role = {_quote(role)}")
        if self.study:
            clauses.append(f"tags.study = {_quote(self.study)}")
        clauses += [f"params.`{k}` = {_quote(v)}" for k, v in sorted(self.params.items())]
        return " and ".join(clauses)

    def without_params(self, *keys: str) -> RunSelection:
        """The same selection with some param filters dropped (e.g. epoch, for the trajectory)."""
        kept = {k: v for k, v in self.params.items() if k not in keys}
        return RunSelection(self.experiment, self.study, self.role, kept, self.finished_only)


def _quote(value: str) -> str:
    if "'" in value and '"' in value:
        raise ValueError(f"filter value {value!r} holds both quote characters")
    return f'"{value}"' if "'" in value else f"'{value}'"


def experiment_ids(client: MlflowClient, name: str | None) -> list[str]:
    """Ids of the named experiment, or of every active experiment when name is None."""
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise SelectionError(f"no MLflow experiment named {name!r}; experiments in this store: {known}")
    return [experiment.experiment_id]


def select_runs(selection: RunSelection, client: MlflowClient | None = None) -> list[RunInfo]:
    """Every run matching the selection, oldest first (all result pages are read)."""
    client = client or MlflowClient()
    ids = experiment_ids(client, selection.experiment)
    runs: list[RunInfo] = []
    for role in selection.roles:
        token = None
        while True:
            page = client.search_runs(
                ids,
                selection.filter_string(role),
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs += [RunInfo.from_mlflow(r) for r in page]
            token = page.token
            if not token:
                break
    return sorted(runs, key=lambda r: r.start_time)


def get_run(run_id: str, client: MlflowClient | None = None) -> RunInfo:
    """One run by id, with a clear error when it does not exist."""
    client = client or MlflowClient()
    try:
        return RunInfo.from_mlflow(client.get_run(run_id))
    except mlflow.exceptions.MlflowException as err:
        raise SelectionError(f"run {run_id!r} not found in {mlflow.get_tracking_uri()}: {err}") from None


# ---------------------------------------------------------------- the reference run


@dataclass(frozen=True)
class ReferenceSpec:
    """How to pick the reference run: by id, or by param values among the selected runs.

    The default is the multi-task run (all three tasks) of the default model. Several matches are
    narrowed to the unpoisoned ones; if that still leaves more than one, the choice is refused,
    unless `pick_first`: then the first checkpoint of the newest fine-tune among them is taken
    (what the command line does when no --reference is given).
    """

    run_id: str | None = None
    params: dict[str, str] = field(default_factory=lambda: {"model": DEFAULT_REFERENCE_MODEL})
    multitask: bool = True
    pick_first: bool = False

    @classmethod
    def parse(cls, text: str | None) -> ReferenceSpec:
        """CLI form: empty (the default), a run id, or ``key=value;key=value`` param filters."""
        text = (text or "").strip()
        if not text:
            return cls(pick_first=True)
        if "=" not in text:
            return cls(run_id=text)
        params = parse_key_values([text])
        return cls(params=params, multitask="tasks" not in params)

    def matches(self, run: RunInfo) -> bool:
        if self.multitask and not set(PAPER_TASKS) <= set(run.tasks):
            return False
        return all(_param_equal(k, run.params.get(k), v) for k, v in self.params.items())

    def describe(self) -> str:
        if self.run_id:
            return f"run {self.run_id}"
        parts = [f"{k}={v}" for k, v in self.params.items()]
        if self.multitask:
            parts.append("tasks=all three")
        return ", ".join(parts)


def resolve_reference(
    runs: list[RunInfo], spec: ReferenceSpec, client: MlflowClient | None = None, notes: list[str] | None = None
) -> RunInfo:
    """The reference run: by id (fetched if it is outside the selection) or the single param match
    (with spec.pick_first, the first checkpoint of the newest matching fine-tune; said in `notes`)."""
    if spec.run_id:
        for run in runs:
            if run.run_id == spec.run_id:
                return run
        return get_run(spec.run_id, client)
    matches = [r for r in runs if spec.matches(r)]
    if len(matches) > 1:
        unpoisoned = [r for r in matches if r.poison_rate == 0]
        matches = unpoisoned or matches
    if len(matches) == 1:
        return matches[0]
    if spec.pick_first and runs:
        among = f"{len(matches)} runs matching {spec.describe()}" if matches else (
            f"the {len(runs)} selected runs (none matches {spec.describe()})")
        picked = first_of_newest(matches or runs)
        if notes is not None:
            notes.append(
                f"reference: {picked.run_name or picked.run_id} ({picked.run_id}, {_short(picked)}), the first "
                f"checkpoint of the newest fine-tune among {among}; choose another with --reference RUN_ID"
            )
        return picked
    if not matches:
        raise SelectionError(
            f"no selected run matches the reference ({spec.describe()}) among {len(runs)} runs; "
            "pass --reference RUN_ID or --reference 'model=...;epoch=...'"
        )
    listing = "; ".join(f"{r.run_id} ({_short(r)})" for r in matches[:10])
    raise SelectionError(
        f"{len(matches)} runs match the reference ({spec.describe()}): {listing}. Narrow the selection "
        "(e.g. --param epoch=100) or pass --reference RUN_ID"
    )


def first_of_newest(runs: list[RunInfo]) -> RunInfo:
    """The earliest checkpoint epoch of the fine-tune (parent run) started last; a run without a
    parent counts as a fine-tune of its own."""
    families: dict[str, list[RunInfo]] = {}
    for run in runs:
        families.setdefault(run.tags.get(PARENT_TAG) or run.run_id, []).append(run)
    newest = max(families.values(), key=lambda family: min(r.start_time for r in family))
    return min(newest, key=lambda r: (r.epoch if r.epoch is not None else 0, r.start_time))


def _short(run: RunInfo) -> str:
    return f"model={run.model} tasks={','.join(run.tasks)} epoch={run.epoch} poison={run.poison_rate}"


def _param_equal(key: str, actual: str | None, wanted: str) -> bool:
    if actual is None:
        return False
    if key == "tasks":
        return set(parse_tasks(actual)) == set(parse_tasks(wanted))
    if actual == wanted:
        return True
    a, w = _as_float(actual), _as_float(wanted)
    return a is not None and w is not None and a == w


def _as_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _as_int(value: str | None) -> int | None:
    number = _as_float(value)
    return int(number) if number is not None and number.is_integer() else None


# ---------------------------------------------------------------- prediction artifacts


class PredictionStore:
    """``predictions/<task>.jsonl`` of runs, downloaded once per run into ``cache_dir/<run id>/``.

    A finished run's artifacts do not change, so the run id is the cache key; a ``.complete``
    marker is written only after a whole download, so an interrupted fetch is redone.
    """

    def __init__(self, cache_dir: Path | str = DEFAULT_CACHE_DIR, client: MlflowClient | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.client = client or MlflowClient()
        self._loaded: dict[tuple[str, str], dict[str, dict[str, Any]] | None] = {}
        self._locations: dict[str, str] = {}

    def locate(self, runs: Iterable[RunInfo]) -> None:
        """Remember where runs keep their artifacts (a run search returns it).

        A run found this way is downloaded from its artifact location directly; one known only by
        id is looked up first, which cost four run reads per run (most of a 500-run analysis).
        """
        self._locations.update({r.run_id: r.artifact_uri for r in runs if r.artifact_uri})

    def run_dir(self, run_id: str) -> Path:
        return self.cache_dir / run_id

    def fetch(self, run_id: str) -> Path:
        """The local folder holding the run's predictions/ (downloaded on first use)."""
        folder = self.run_dir(run_id)
        if (folder / ".complete").exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        location = self._locations.get(run_id)
        if location is None:
            if self.client.list_artifacts(run_id, schema.PREDICTIONS_DIR):
                self.client.download_artifacts(run_id, schema.PREDICTIONS_DIR, str(folder))
        else:
            repository = get_artifact_repository(location, tracking_uri=self.client.tracking_uri)
            if repository.list_artifacts(schema.PREDICTIONS_DIR):
                repository.download_artifacts(schema.PREDICTIONS_DIR, str(folder))
        (folder / ".complete").touch()
        return folder

    def prefetch(self, run_ids: Iterable[str], workers: int = 8) -> None:
        """Download many runs concurrently (a remote server answers faster to parallel requests)."""
        missing = [r for r in dict.fromkeys(run_ids) if not (self.run_dir(r) / ".complete").exists()]
        if len(missing) <= 1 or workers <= 1:
            for run_id in missing:
                self.fetch(run_id)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.fetch, missing))

    def load(self, run_id: str, task: str) -> dict[str, dict[str, Any]] | None:
        """The run's predictions for `task` keyed by example id, or None if it has none."""
        key = (run_id, task)
        if key not in self._loaded:
            path = self.fetch(run_id) / schema.predictions_file(task)
            self._loaded[key] = read_predictions(path, run_id) if path.exists() else None
        return self._loaded[key]


def read_predictions(path: Path, run_id: str = "") -> dict[str, dict[str, Any]]:
    """Parse a predictions JSONL file into {example id: record}; duplicate or missing ids are errors."""
    records: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} (run {run_id}): not JSON: {err}") from None
            example_id = record.get("id")
            if not example_id:
                raise ValueError(f"{path}:{line_no} (run {run_id}): record has no 'id'")
            if example_id in records:
                raise ValueError(f"{path}:{line_no} (run {run_id}): duplicate example id {example_id!r}")
            records[example_id] = record
    return records


# ---------------------------------------------------------------- alignment


@dataclass(frozen=True)
class AlignedPair:
    """Two runs' predictions for one task, in the same example order."""

    task: str
    ids: list[str]
    ref: list[dict[str, Any]]
    other: list[dict[str, Any]]


def align(
    task: str,
    ref_id: str,
    ref: Mapping[str, dict[str, Any]],
    other_id: str,
    other: Mapping[str, dict[str, Any]],
) -> AlignedPair:
    """Pair two runs' records by example id; refuse if the example sets or their references differ."""
    only_ref, only_other = sorted(set(ref) - set(other)), sorted(set(other) - set(ref))
    if only_ref or only_other:
        raise AlignmentError(
            f"{task}: runs {ref_id} and {other_id} were evaluated on different test sets "
            f"({len(ref)} vs {len(other)} examples; {len(only_ref)} only in the first, e.g. {only_ref[:3]}; "
            f"{len(only_other)} only in the second, e.g. {only_other[:3]}). Compare runs of the same "
            "study / data fingerprint, or narrow the selection."
        )
    ids = sorted(ref)
    differing = [i for i in ids if ref[i].get("reference") != other[i].get("reference")]
    if differing:
        raise AlignmentError(
            f"{task}: runs {ref_id} and {other_id} share example ids but {len(differing)} references "
            f"differ (e.g. {differing[:3]}): the test sets are not the same data"
        )
    return AlignedPair(task, ids, [ref[i] for i in ids], [other[i] for i in ids])
