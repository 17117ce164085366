"""Optuna samplers and pruners by name, as a sweep file's `sampler:` / `pruner:` sections name them.

Each entry builds the Optuna object from the section's remaining keys, e.g.
`sampler: {name: tpe, seed: 42, n_startup_trials: 5}` -> TPESampler(seed=42, n_startup_trials=5).
"""
from __future__ import annotations

import importlib.util
import inspect
import warnings
from typing import Any

import optuna

from pipelines.registry import Registry
from pipelines.sweeps.space import SweepSpaceError

SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry("sampler")
PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry("pruner")

SAMPLERS.add("tpe", optuna.samplers.TPESampler)
SAMPLERS.add("random", optuna.samplers.RandomSampler)
SAMPLERS.add("qmc", optuna.samplers.QMCSampler)
SAMPLERS.add("gp", optuna.samplers.GPSampler)
SAMPLERS.add("cmaes", optuna.samplers.CmaEsSampler)

PRUNERS.add("median", optuna.pruners.MedianPruner)
PRUNERS.add("percentile", optuna.pruners.PercentilePruner)
PRUNERS.add("hyperband", optuna.pruners.HyperbandPruner)
PRUNERS.add("successive_halving", optuna.pruners.SuccessiveHalvingPruner)
PRUNERS.add("threshold", optuna.pruners.ThresholdPruner)  # e.g. {name: threshold, lower: 0.2}
PRUNERS.add("none", optuna.pruners.NopPruner)

# Defaults that differ from Optuna's. constant_liar: workers sharing a study avoid proposing
# what another worker is running right now.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {"tpe": {"constant_liar": True}}
# Extra packages a sampler imports only when it first samples: check them up front.
REQUIRES: dict[str, str] = {"cmaes": "cmaes"}


def _build(registry: Registry, section: dict[str, Any]) -> Any:
    name = str(section["name"])
    cls = registry.get(name)
    package = REQUIRES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise SweepSpaceError(f"{registry.kind} {name!r} needs the {package} package: pip install {package}")
    options = {**DEFAULT_OPTIONS.get(name, {}), **{k: v for k, v in section.items() if k != "name"}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(**options)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise SweepSpaceError(
            f"{registry.kind} {name!r}: bad option(s) {sorted(options)} ({exc}); "
            f"accepted: {', '.join(accepted) or 'none'}"
        ) from None


def build_sampler(section: dict[str, Any], worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of a sweep file's `sampler:` section.

    Each worker of a shared study adds its --worker-index to the seed, so two workers do not
    draw the same random start-up trials; a single worker (index 0) is reproducible.
    """
    section = dict(section)
    if section.get("seed") is not None:
        section["seed"] = int(section["seed"]) + worker_index
    return _build(SAMPLERS, section)


def build_pruner(section: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner of a sweep file's `pruner:` section."""
    return _build(PRUNERS, section)


def describe(section: dict[str, Any]) -> str:
    """'tpe(seed=42)' for MLflow params."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(section.items()) if k != "name")
    return f"{section['name']}({options})"
