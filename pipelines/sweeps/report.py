"""What a sweep worker leaves on its MLflow parent run when it stops: trial counts, the best trial
so far (of the whole study, every worker's trials included), the command that re-runs it as a
full fine-tune, the trials table, and Optuna's Plotly figures as self-contained HTML."""
from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.trial import FrozenTrial, TrialState

from pipelines.config import FinetuneConfig
from pipelines.runs import tracking
from pipelines.sweeps.space import SweepSpace

log = logging.getLogger(__name__)

# name -> (Optuna plot function, completed trials it needs)
FIGURES: dict[str, tuple[Callable[[optuna.Study], Any], int]] = {
    "optimization_history": (optuna.visualization.plot_optimization_history, 1),
    "param_importances": (optuna.visualization.plot_param_importances, 2),
    "parallel_coordinate": (optuna.visualization.plot_parallel_coordinate, 1),
    "slice": (optuna.visualization.plot_slice, 1),
}
# Left out of the re-run command: the full fine-tune scores on the test split (the finetune
# default) and gets its own study tag and run name.
RERUN_SKIP = ("eval_split", "extra_tags", "run_name", "study")


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial, or None while there is none."""
    try:
        return study.best_trial
    except ValueError:
        return None


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Trials of the whole study by state, e.g. {'COMPLETE': 3, 'PRUNED': 1, ...}."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def rerun_command(space: SweepSpace, trial: FrozenTrial, study_tag: str, run_name: str) -> str:
    """`python -m pipelines.finetune ...` with the trial's values; evaluated on the test split."""
    config = space.trial_config(dict(trial.params))
    default = FinetuneConfig()  # the paper's values: the base of `--preset paper`
    argv = ["python", "-m", "pipelines.finetune", "--preset", "paper"]
    for f in fields(FinetuneConfig):
        value = getattr(config, f.name)
        if f.name in RERUN_SKIP or value == getattr(default, f.name):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        argv += [f"--{f.name.replace('_', '-')}", shown]
    argv += ["--study", study_tag, "--run-name", run_name]
    return shlex.join(argv)


def write_figures(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Write each figure as HTML with plotly.js inlined (opens offline, about 5 MB each).

    Returns name -> file name, or the reason it was skipped (too few completed trials, or the
    plot failed: a figure must never fail the sweep).
    """
    folder.mkdir(parents=True, exist_ok=True)
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    status: dict[str, str] = {}
    for name, (plot, needed) in FIGURES.items():
        if complete < needed:
            status[name] = f"skipped: needs {needed} completed trial(s), the study has {complete}"
            continue
        try:
            figure = plot(study)
        except Exception as exc:  # e.g. importances of parameters that never varied
            status[name] = f"skipped: {exc.__class__.__name__}: {exc}"
            continue
        path = folder / f"{name}.html"
        figure.write_html(str(path), include_plotlyjs=True)
        status[name] = path.name
    for name, state in status.items():
        if not state.endswith(".html"):
            log.info("figure %s %s", name, state)
    return status


def log_summary(study: optuna.Study, space: SweepSpace, study_tag: str, own_trials: list[int],
                figures: bool) -> dict[str, Any]:
    """Log counts, best trial, re-run command, trials table and figures to the active (parent) run."""
    counts = trial_counts(study)
    mlflow.log_metrics({f"trials/{k.lower()}": v for k, v in counts.items()})
    mlflow.log_metric("worker/trials_run", len(own_trials))
    summary: dict[str, Any] = {"optuna_study": study.study_name, "counts": counts, "own_trials": own_trials}
    best = best_trial(study)
    if best is not None:
        command = rerun_command(space, best, study_tag, f"{study.study_name}-best")
        mlflow.log_metric("best_value", best.value)
        tracking.log_params_once({f"best/{k}": v for k, v in best.params.items()})
        mlflow.set_tags({"best_trial_number": str(best.number), "rerun_command": command[:5000],
                         "best_trial_run_id": str(best.user_attrs.get("mlflow_run_id", ""))})
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_run_id=best.user_attrs.get("mlflow_run_id", ""), rerun_command=command)
    else:
        mlflow.set_tag("best_trial_number", "none")
    tracking.log_json(summary, "sweep/summary.json")
    with tracking.scratch_dir("sweep-") as tmp:
        frame = study.trials_dataframe()
        if not frame.empty:
            frame.to_csv(tmp / "trials.csv", index=False)
            mlflow.log_artifact(str(tmp / "trials.csv"), "sweep")
        if figures:
            status = write_figures(study, tmp / "figures")
            tracking.log_folder(tmp / "figures", "figures")
            summary["figures"] = status
            tracking.log_json(status, "sweep/figures.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The lines printed at the end of a sweep."""
    counts = {k: v for k, v in summary["counts"].items() if v}
    lines = [f"Study {summary['optuna_study']}: {json.dumps(counts)}; "
             f"this worker ran trials {summary['own_trials']}"]
    if "best_trial" in summary:
        lines += [
            f"Best trial {summary['best_trial']}: value {summary['best_value']:.4f} "
            f"(MLflow run {summary['best_run_id']})",
            f"  params: {json.dumps(summary['best_params'])}",
            "Re-run it as a full fine-tune (scored on the test split):",
            f"  {summary['rerun_command']}",
        ]
    else:
        lines.append("No trial completed yet: nothing to re-run.")
    waiting = summary["counts"].get("WAITING", 0)
    if waiting:
        lines.append(f"{waiting} trial(s) WAITING (re-queued from crashed workers): start a worker "
                     f"with --study-name {summary['optuna_study']} to run them.")
    return "\n".join(lines)
