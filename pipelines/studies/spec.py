"""A study file (YAML): shared settings plus a list of runs, each a fine-tune or a baseline.

    name: demo                      # the MLflow `study` tag of every run
    experiment: clinical-slm        # optional
    shared:   {data: ..., eval_limit: 8}       # every run (fields of either config)
    finetune: {model: ..., epochs: 2}          # every fine-tune (FinetuneConfig fields)
    baseline: {backend: local}                 # every baseline (BaselineConfig fields)
    runs:
      - {name: smollm2-labeling, tasks: labeling}
      - {name: "smollm2-multitask-poison{poison_rate}", vary: {poison_rate: [0.25, 0.5]}}
      - {name: smollm2-zero-shot, kind: baseline, prompting: zero-shot}
    analysis: {args: [--param, epoch=2]}       # extra `python -m analysis.analyze` options
    report: {args: []}                         # extra options of the report builder

A run's settings are shared < kind defaults < its own < command-line --set; `vary` expands
one entry into one run per combination of values. Every config is built (and validated) when
the file is loaded, so a typo fails before anything runs. A run's key is a hash of its
declared result-relevant settings: the tracking store is searched by study tag plus key, so
editing a run's settings makes it a new run, while renaming it or changing the device does not.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from pipelines.baselines.config import BaselineConfig
from pipelines.config import ConfigError, FinetuneConfig

KINDS: dict[str, type] = {"finetune": FinetuneConfig, "baseline": BaselineConfig}
RESERVED = {"name", "kind", "vary"}
SET_BY_STUDY = {"study", "experiment", "run_name"}
# Settings that do not change a run's results: left out of its key.
NOT_IN_KEY = frozenset({
    "device", "processes", "eval_batch_size", "output_dir", "cache", "concurrency", "max_retries", "timeout_s",
    "backoff_s", "api_key_env", "allow_remote", "prompts_dir", "extra_tags", "system_metrics",
})
TOP_LEVEL = {"name", "experiment", "shared", "finetune", "baseline", "runs", "analysis", "report"}


class StudyError(ConfigError):
    """A study file that cannot be used; the message names the file, the run and what to change."""


@dataclass
class StudyRun:
    """One run of a study: its name, kind, declared settings, validated config and key."""

    name: str
    kind: str
    settings: dict[str, Any]
    config: FinetuneConfig | BaselineConfig
    key: str


@dataclass
class Study:
    """A loaded study file."""

    name: str
    path: Path
    experiment: str
    runs: list[StudyRun]
    analysis_args: list[str] = field(default_factory=list)
    report_args: list[str] = field(default_factory=list)

    def run(self, name: str) -> StudyRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise StudyError(f"study {self.name!r} has no run {name!r}; runs: {[r.name for r in self.runs]}")


def field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def run_key(study: str, kind: str, config: object, declared: dict[str, Any]) -> str:
    """16 hex digits identifying the run's result: study, kind, and its declared settings as resolved."""
    identity = {k: _plain(getattr(config, k)) for k in sorted(declared) if k not in NOT_IN_KEY}
    blob = json.dumps({"study": study, "kind": kind, "settings": identity}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(cls: type, key: str, value: Any) -> Any:
    """YAML reads `8e-4` as a string (YAML 1.1 wants `8.0e-4`): numbers are converted by field type."""
    kind = get_type_hints(cls).get(key)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StudyError(f"{where} must be a mapping of setting: value, got {type(data).__name__}")
    return data


def _args(data: Any, where: str) -> list[str]:
    args = _mapping(data, where).get("args", [])
    if not isinstance(args, list):
        raise StudyError(f"{where}.args must be a list of command-line words")
    return [str(a) for a in args]


def _expand(entry: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """One declared entry -> one settings dict per combination of its `vary` values."""
    vary = _mapping(entry.get("vary"), f"runs[{index}].vary")
    base = {k: v for k, v in entry.items() if k != "vary"}
    if not vary:
        return [base]
    names, values = zip(*((k, v if isinstance(v, list) else [v]) for k, v in vary.items()), strict=True)
    out = []
    for combo in itertools.product(*values):
        chosen = dict(zip(names, combo, strict=True))
        run = {**base, **chosen}
        try:
            run["name"] = str(base.get("name", "")).format(**chosen)
        except (KeyError, IndexError, ValueError) as exc:
            raise StudyError(f"runs[{index}].name {base.get('name')!r} cannot be filled from vary ({exc})") \
                from None
        out.append(run)
    return out


def _build_run(study: str, experiment: str, entry: dict[str, Any], layers: dict[str, dict[str, Any]],
               overrides: dict[str, Any]) -> StudyRun:
    name, kind = str(entry.get("name") or ""), str(entry.get("kind", "finetune"))
    if not name:
        raise StudyError(f"a run of study {study!r} has no name: {entry}")
    if kind not in KINDS:
        raise StudyError(f"run {name!r}: kind must be one of {sorted(KINDS)}, got {kind!r}")
    valid = field_names(KINDS[kind])
    own = {k: v for k, v in entry.items() if k not in RESERVED}
    shared = {k: v for k, v in layers["shared"].items() if k in valid}
    forced = {k: v for k, v in overrides.items() if k in valid}
    settings = {**shared, **layers[kind], **own, **forced}
    for key in settings:
        if key in SET_BY_STUDY:
            raise StudyError(f"run {name!r}: {key!r} is set by the study (name, experiment at the top)")
        if key not in valid:
            raise StudyError(f"run {name!r}: unknown {kind} setting {key!r}; "
                             f"valid: {', '.join(sorted(valid))}")
    try:
        settings = {k: _coerce(KINDS[kind], k, v) for k, v in settings.items()}
        config = KINDS[kind](**settings, study=study, experiment=experiment, run_name=name)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"run {name!r}: {exc}") from None
    return StudyRun(name, kind, settings, config, run_key(study, kind, config, settings))


def load_study(path: Path | str, overrides: dict[str, Any] | None = None) -> Study:
    """Read, expand and validate a study file; `overrides` (--set) win over every layer of every run."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"cannot read study file {path}: {exc}") from None
    data = _mapping(data, str(path))
    unknown = set(data) - TOP_LEVEL
    if unknown:
        raise StudyError(f"{path}: unknown top-level key(s) {sorted(unknown)}; valid: {sorted(TOP_LEVEL)}")
    name = str(data.get("name") or "")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise StudyError(f"{path}: give the study a name of letters, digits, '.', '_' or '-' (name: ...); "
                         f"it becomes the runs' study tag, got {name!r}")
    experiment = str(data.get("experiment") or FinetuneConfig.experiment)
    layers = {part: _mapping(data.get(part), part) for part in ("shared", "finetune", "baseline")}
    known = field_names(FinetuneConfig) | field_names(BaselineConfig)
    for key in {**layers["shared"], **(overrides or {})}:
        if key not in known:
            raise StudyError(f"{path}: shared setting {key!r} is neither a fine-tune nor a baseline setting")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise StudyError(f"{path}: list the study's runs under runs:")
    runs = [_build_run(name, experiment, expanded, layers, overrides or {})
            for i, entry in enumerate(entries) for expanded in _expand(_mapping(entry, f"runs[{i}]"), i)]
    _check_unique(runs, path)
    return Study(name, path, experiment, runs, _args(data.get("analysis"), "analysis"),
                 _args(data.get("report"), "report"))


def _check_unique(runs: list[StudyRun], path: Path) -> None:
    seen_names: set[str] = set()
    seen_keys: dict[str, str] = {}
    for run in runs:
        if run.name in seen_names:
            raise StudyError(f"{path}: two runs are named {run.name!r}; run names must be unique")
        if run.key in seen_keys:
            raise StudyError(f"{path}: runs {seen_keys[run.key]!r} and {run.name!r} declare the same "
                             "settings; drop one of them")
        seen_names.add(run.name)
        seen_keys[run.key] = run.name


def parse_overrides(options: list[str]) -> dict[str, Any]:
    """--set key=value pairs (each option may hold several separated by ';', since data specs hold
    commas; empty ones are ignored); values are read as YAML scalars (numbers, booleans, strings)."""
    out: dict[str, Any] = {}
    for pair in (p.strip() for option in options for p in option.split(";")):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise StudyError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out
