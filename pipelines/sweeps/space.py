"""The declarative sweep file (sweeps/*.yaml): what is searched, what is fixed, what is optimized.

A sweep file has these sections (see sweeps/default.yaml):

    objective:   metrics (a list of `<task>/<metric>` names, or `headline`), combine, direction
    sampler:     {name: tpe, seed: 42, ...}   options go to the Optuna sampler
    pruner:      {name: median, ...}          options go to the Optuna pruner
    evaluate_at: epochs at which a trial is evaluated and reported to the pruner
    fixed:       FinetuneConfig values every trial shares
    params:      FinetuneConfig values the sampler chooses, one distribution each

Everything is validated when the file is loaded; errors name the file, the key and the fix.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from pipelines.config import ConfigError, FinetuneConfig
from pipelines.registry import Registry
from pipelines.tasks import get_task

# Set by the sweep itself, never by a sweep file (trials score on validation, never on test).
RESERVED_FIELDS = {
    "eval_split": "trials always score on the validation split",
    "checkpoint_epochs": "use `evaluate_at`",
    "run_name": "trial runs are named after the study",
    "extra_tags": "trial runs are tagged by the sweep",
    "study": "use --study",
    "experiment": "use --experiment",
}
TUNABLE_FIELDS = tuple(f.name for f in fields(FinetuneConfig) if f.name not in RESERVED_FIELDS)
PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
HEADLINE = "headline"

# How several metrics become one objective value.
COMBINERS: Registry[Callable[[list[float]], float]] = Registry("objective combination")
COMBINERS.add("mean", lambda values: sum(values) / len(values))
COMBINERS.add("min", min)  # the worst task decides: a model must serve every task
COMBINERS.add("max", max)


class SweepSpaceError(ConfigError):
    """An invalid sweep file or override; the message names the key and what to change."""


class ObjectiveMetricMissing(LookupError):
    """The objective names a metric the evaluation did not produce (a typo, or a task not trained)."""


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: a float or int range (optionally log scale), or a choice."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """Ask the Optuna trial for a value of this parameter."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def candidates(self) -> tuple[Any, ...]:
        """Every choice, or both ends of the range."""
        if self.type == "categorical":
            return self.choices
        kind = int if self.type == "int" else float
        return kind(self.low), kind(self.high)

    def first(self) -> Any:
        """A representative value (the low end or first choice), to validate the space up front."""
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else float(self.low)


@dataclass(frozen=True)
class Objective:
    """What a trial is scored by: one metric, or a combination of several; and its direction."""

    metrics: tuple[str, ...]
    combine: str = "mean"
    direction: str = "maximize"

    @property
    def name(self) -> str:
        """e.g. 'harmonization/accuracy' or 'mean(labeling/f1_macro,harmonization/accuracy,...)'."""
        if len(self.metrics) == 1:
            return self.metrics[0]
        return f"{self.combine}({','.join(self.metrics)})"

    def value(self, metrics: dict[str, float]) -> float:
        """The objective value of one evaluation's metrics."""
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            available = ", ".join(sorted(k for k in metrics if not k.startswith("perf/")))
            raise ObjectiveMetricMissing(
                f"objective metric(s) {missing} were not produced by the evaluation; "
                f"fix objective.metrics in the sweep file; available: {available}"
            )
        return float(COMBINERS.get(self.combine)([float(metrics[m]) for m in self.metrics]))


@dataclass
class SweepSpace:
    """A loaded, validated sweep file."""

    objective: Objective  # as declared; `headline` is expanded by resolved_objective()
    params: dict[str, ParamSpec]
    fixed: dict[str, Any] = field(default_factory=dict)
    evaluate_at: tuple[int, ...] = (2, 5, 20, 100)
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 42})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    source: str = "<memory>"

    def trial_config(self, values: dict[str, Any], **extra: Any) -> FinetuneConfig:
        """The fine-tune of one trial: fixed values, then the sampled ones, then `extra`; scored on
        validation. The trial is evaluated at each `evaluate_at` epoch it reaches, and at its last.
        """
        merged = {**self.fixed, **values, **extra}
        if merged.get("lora_targets") == "preset":
            merged["lora_targets"] = ()
        epochs = int(merged.get("epochs", FinetuneConfig.epochs))
        checkpoints = sorted({e for e in self.evaluate_at if e <= epochs} | {epochs})
        return FinetuneConfig(**merged, checkpoint_epochs=tuple(checkpoints), eval_split="validation")

    def with_fixed(self, overrides: dict[str, Any]) -> SweepSpace:
        """A copy with `overrides` fixed (a searched parameter named here is no longer searched)."""
        for key in overrides:
            _check_field(key, "override", self.source)
        fixed = {**self.fixed, **{k: _coerce(k, v, self.source) for k, v in overrides.items()}}
        params = {k: v for k, v in self.params.items() if k not in overrides}
        space = SweepSpace(self.objective, params, fixed, self.evaluate_at, dict(self.sampler),
                           dict(self.pruner), self.source)
        space.validate()
        return space

    def data_specs(self) -> list[str]:
        """Every data spec a trial can train on (the fixed one, or each choice when data is searched)."""
        first = {name: spec.first() for name, spec in self.params.items()}
        trials = [{**first, "data": c} for c in self.params["data"].candidates()] if "data" in self.params else [first]
        return sorted({self.trial_config(values).data for values in trials})

    def resolved_objective(self) -> Objective:
        """The objective with `headline` expanded for the trained tasks."""
        return resolve_objective(self.objective, self.tasks())

    def tasks(self) -> tuple[str, ...]:
        """The tasks every trial trains (fixed, or the FinetuneConfig default)."""
        return FinetuneConfig(tasks=self.fixed.get("tasks", FinetuneConfig().tasks)).tasks

    def validate(self) -> None:
        """Build a trial config with every choice and range end of each parameter (the others at
        their first value): a value FinetuneConfig rejects fails now, not in trial 17."""
        first = {name: spec.first() for name, spec in self.params.items()}
        try:
            self.trial_config(first)
        except ValueError as exc:
            raise SweepSpaceError(f"{self.source}: the fixed values fail: {exc}") from None
        for name, spec in self.params.items():
            for value in spec.candidates():
                try:
                    self.trial_config({**first, name: value})
                except ValueError as exc:
                    raise SweepSpaceError(f"{self.source}: params.{name} = {value!r} fails: {exc}") from None
        self.resolved_objective()

    def fingerprint(self) -> str:
        """A digest of what defines the sweep's trials; workers joining one study must agree on it."""
        blob = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """JSON-able form of the trial-defining part (objective, evaluation epochs, fixed, params)."""
        objective = self.resolved_objective()
        return {
            "objective": {"metrics": list(objective.metrics), "combine": objective.combine,
                          "direction": objective.direction},
            "evaluate_at": list(self.evaluate_at),
            "fixed": {k: list(v) if isinstance(v, tuple) else v for k, v in self.fixed.items()},
            "params": {name: _spec_dict(spec) for name, spec in self.params.items()},
        }


def _spec_dict(spec: ParamSpec) -> dict[str, Any]:
    if spec.type == "categorical":
        return {"type": spec.type, "choices": list(spec.choices)}
    out = {"type": spec.type, "low": spec.low, "high": spec.high, "log": spec.log}
    return out | ({"step": spec.step} if spec.step is not None else {})


def resolve_objective(objective: Objective, tasks: tuple[str, ...]) -> Objective:
    """Expand `headline` to each trained task's headline metric; check every metric's task is trained."""
    if objective.metrics == (HEADLINE,):
        metrics = tuple(f"{t}/{get_task(t).headline_metric}" for t in tasks)
        return Objective(metrics, objective.combine, objective.direction)
    for metric in objective.metrics:
        task = metric.split("/", 1)[0]
        if "/" not in metric or task not in tasks:
            raise SweepSpaceError(
                f"objective metric {metric!r} must be '<task>/<metric>' for a trained task "
                f"({', '.join(tasks)}); add the task to `tasks` or change objective.metrics"
            )
    return objective


def parse_objective(raw: Any, source: str) -> Objective:
    """The `objective:` section (or a CLI override): metrics, combine, direction."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise SweepSpaceError(f"{source}: `objective` must be a mapping with metrics, combine, direction")
    unknown = set(raw) - {"metrics", "combine", "direction"}
    if unknown:
        raise SweepSpaceError(
            f"{source}: unknown objective key(s) {sorted(unknown)}; use metrics, combine, direction")
    metrics = raw.get("metrics", HEADLINE)
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if not metrics:
        raise SweepSpaceError(f"{source}: objective.metrics is empty; give `headline` or metric names")
    combine = str(raw.get("combine", "mean"))
    if combine not in COMBINERS:
        raise SweepSpaceError(
            f"{source}: objective.combine {combine!r} is unknown; valid: {', '.join(COMBINERS)}")
    direction = str(raw.get("direction", "maximize"))
    if direction not in DIRECTIONS:
        raise SweepSpaceError(f"{source}: objective.direction must be one of {DIRECTIONS}, got {direction!r}")
    return Objective(tuple(str(m) for m in metrics), combine, direction)


def _check_field(name: str, where: str, source: str) -> None:
    if name in RESERVED_FIELDS:
        raise SweepSpaceError(f"{source}: {where} {name!r} is set by the sweep itself "
                              f"({RESERVED_FIELDS[name]}); remove it")
    if name not in TUNABLE_FIELDS:
        raise SweepSpaceError(f"{source}: unknown {where} {name!r}; valid names: {', '.join(TUNABLE_FIELDS)}")


def _coerce(name: str, value: Any, source: str) -> Any:
    """A fixed value in its FinetuneConfig type (YAML reads `1e-4` as a string)."""
    kind = get_type_hints(FinetuneConfig)[name]
    try:
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except (TypeError, ValueError):
        raise SweepSpaceError(f"{source}: {name} must be a number, got {value!r}") from None
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def parse_param(name: str, raw: Any, source: str) -> ParamSpec:
    """One entry of `params:`: {type: float|int, low, high, log?, step?} or {type: categorical, choices}."""
    _check_field(name, "parameter", source)
    where = f"{source}: params.{name}"
    if not isinstance(raw, dict) or raw.get("type") not in PARAM_TYPES:
        raise SweepSpaceError(f"{where} needs `type:` one of {PARAM_TYPES}")
    kind = raw["type"]
    field_type = get_type_hints(FinetuneConfig)[name]
    if kind != "categorical" and field_type not in (int, float):
        raise SweepSpaceError(f"{where}: {name} is not numeric; search it with type: categorical")
    if kind == "float" and field_type is int:
        raise SweepSpaceError(f"{where}: {name} is an integer; use type: int or categorical")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = set(raw) - allowed
    if unknown:
        raise SweepSpaceError(
            f"{where}: unknown key(s) {sorted(unknown)} for a {kind}; use {sorted(allowed)}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SweepSpaceError(f"{where}: categorical needs a non-empty `choices:` list")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise SweepSpaceError(f"{where}: choices must be scalars; write a module list as 'q_proj,v_proj'")
        return ParamSpec(name, kind, choices=tuple(_coerce(name, c, source) if c != "preset" else c
                                                   for c in choices))
    try:
        low, high = float(raw["low"]), float(raw["high"])
        step = float(raw["step"]) if raw.get("step") is not None else None
    except (KeyError, TypeError, ValueError):
        raise SweepSpaceError(f"{where}: a {kind} range needs numeric `low:` and `high:`") from None
    log = bool(raw.get("log", False))
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise SweepSpaceError(f"{where}: need low <= high, got low={low}, high={high}")
    if log and (low <= 0 or step is not None):
        raise SweepSpaceError(f"{where}: log scale needs low > 0 and no step")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SweepSpaceError(f"{where}: an int range needs whole low/high, got {low}, {high}")
    return ParamSpec(name, kind, low, high, log, step)


def parse_space(data: dict[str, Any], source: str = "<memory>") -> SweepSpace:
    """A sweep file's content -> validated SweepSpace."""
    if not isinstance(data, dict):
        raise SweepSpaceError(f"{source}: a sweep file is a mapping with objective, params, fixed, ...")
    known = {"objective", "sampler", "pruner", "evaluate_at", "fixed", "params"}
    unknown = set(data) - known
    if unknown:
        raise SweepSpaceError(f"{source}: unknown section(s) {sorted(unknown)}; valid: {sorted(known)}")
    fixed_raw = data.get("fixed") or {}
    params_raw = data.get("params") or {}
    if not params_raw:
        raise SweepSpaceError(f"{source}: `params:` is empty; declare at least one searched parameter")
    both = set(fixed_raw) & set(params_raw)
    if both:
        raise SweepSpaceError(f"{source}: {sorted(both)} both fixed and searched; keep each in one section")
    for key in fixed_raw:
        _check_field(key, "fixed value", source)
    try:
        evaluate_at = tuple(sorted({int(e) for e in data.get("evaluate_at") or (2, 5, 20, 100)}))
    except (TypeError, ValueError):
        raise SweepSpaceError(f"{source}: evaluate_at must be a list of epochs, e.g. [2, 5, 20]") from None
    if evaluate_at[0] < 1:
        raise SweepSpaceError(f"{source}: evaluate_at epochs must be >= 1")
    space = SweepSpace(
        objective=parse_objective(data.get("objective"), source),
        params={name: parse_param(name, raw, source) for name, raw in params_raw.items()},
        fixed={k: _coerce(k, v, source) for k, v in fixed_raw.items()},
        evaluate_at=evaluate_at,
        sampler=_component(data.get("sampler"), "sampler", "tpe", source),
        pruner=_component(data.get("pruner"), "pruner", "median", source),
        source=source,
    )
    space.validate()
    return space


def _component(raw: Any, section: str, default: str, source: str) -> dict[str, Any]:
    if raw is None:
        return {"name": default}
    if isinstance(raw, str):
        return {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise SweepSpaceError(f"{source}: `{section}:` needs a `name:` (e.g. {{name: {default}}})")
    return dict(raw)


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(str(p) for p in Path("sweeps").glob("**/*.yaml")) if Path("sweeps").is_dir() else []
        hint = f"; shipped files: {', '.join(shipped)}" if shipped else ""
        raise SweepSpaceError(f"sweep file {path} not found{hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SweepSpaceError(f"{path}: not valid YAML ({exc})") from None
    return parse_space(data, str(path))
