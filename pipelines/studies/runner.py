"""Run a study: every missing run in order, in-process, claimed so workers never overlap; then the
analysis (and, once it exists, the report) when the whole study is finished.

Resumable: a run with a FINISHED MLflow run is skipped; a FAILED or KILLED one, or one left
RUNNING by a worker that stopped heart-beating, is run again (the stale MLflow run is marked
KILLED). One failing run is reported and the others go on, unless fail_fast.
"""
from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipelines import tracking
from pipelines.baselines.config import BaselineConfig
from pipelines.studies.claims import HEARTBEAT_S, ClaimStore, Heartbeat
from pipelines.studies.plan import run_states
from pipelines.studies.spec import Study, StudyRun

log = logging.getLogger(__name__)

ANALYSIS_MODULE = "analysis.analyze"
# The report builder of issue 5; the hook runs it once the module exists.
REPORT_MODULE = "dashboards"  # python -m dashboards

# (study, run) -> MLflow run id of the fine-tune or baseline it logged.
Executor = Callable[[Study, StudyRun], str]


@dataclass
class Outcome:
    """What happened to one run in this invocation."""

    name: str
    status: str  # ran, skipped (already done), elsewhere (claimed by another worker), failed
    run_id: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class StudyReport:
    """Outcomes in study order, plus what the post steps did."""

    outcomes: list[Outcome] = field(default_factory=list)
    complete: bool = False
    post: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def run_tags(study: Study, run: StudyRun) -> dict[str, str]:
    """Tags that tie an MLflow run to its study entry (what the plan and resume search for)."""
    return {"study_run": run.name, "study_run_key": run.key, "study_file": study.path.name}


def execute_run(study: Study, run: StudyRun) -> str:
    """Train or evaluate one run through the same library calls as its entry point."""
    if isinstance(run.config, BaselineConfig):
        from pipelines.baselines import run_baseline

        return run_baseline(run.config, run_tags=run_tags(study, run)).run_id
    from pipelines.training import train

    return train(run.config, run_tags=run_tags(study, run)).run_id


def run_study(study: Study, claims: ClaimStore, worker_id: str, *, fail_fast: bool = False,
              execute: Executor = execute_run, post_steps: bool = True,
              heartbeat_s: float = HEARTBEAT_S, only: list[str] | None = None) -> StudyReport:
    """Run what is missing, in order; see the module docstring.

    `only`: shell patterns of run names to run (the rest are left alone, but still count when
    deciding whether the study is complete).
    """
    selected = select_runs(study, only)
    tracking.setup_tracking(study.experiment)
    client = MlflowClient()
    session_start = time.time()
    report = StudyReport()
    for run in selected:
        outcome = _run_one(study, run, claims, worker_id, session_start, execute, client, heartbeat_s)
        report.outcomes.append(outcome)
        log.info("study %s: run %s %s %s", study.name, run.name, outcome.status, outcome.detail)
        if outcome.status == "failed" and fail_fast:
            log.error("stopping at the first failure (--fail-fast)")
            break
    states = run_states(study, claims, client)
    report.complete = all(s.state == "done" for s in states.values())
    if report.complete and post_steps:
        digest = hashlib.sha256(",".join(sorted(s.run_id for s in states.values())).encode()).hexdigest()[:16]
        # One worker per set of finished runs does the post steps, even when several end at once.
        if claims.claim(study.name, f"post-{digest}", worker_id, session_start):
            report.post = post_study(study, [states[r.name].run_id for r in study.runs
                                             if isinstance(r.config, BaselineConfig)])
            claims.finish(study.name, f"post-{digest}", worker_id, "done")
    return report


def select_runs(study: Study, only: list[str] | None) -> list[StudyRun]:
    """The runs whose names match any of the patterns (all runs when there are none)."""
    only = [p for p in only or [] if p]
    if not only:
        return list(study.runs)
    chosen = [r for r in study.runs if any(fnmatch.fnmatchcase(r.name, p) for p in only)]
    if not chosen:
        raise ValueError(f"--only {only} matches none of the runs: {[r.name for r in study.runs]}")
    return chosen


def _run_one(study: Study, run: StudyRun, claims: ClaimStore, worker_id: str, session_start: float,
             execute: Executor, client: MlflowClient, heartbeat_s: float) -> Outcome:
    state = run_states(_only(study, run), claims, client)[run.name]
    if state.state == "done":
        return Outcome(run.name, "skipped", state.run_id, "already finished")
    if not claims.claim(study.name, run.key, worker_id, session_start):
        holder = claims.get(study.name, run.key)
        return Outcome(run.name, "elsewhere", state.run_id, f"claimed by {holder.worker if holder else '?'}")
    state = run_states(_only(study, run), claims, client)[run.name]  # it may have finished meanwhile
    if state.state == "done":
        claims.finish(study.name, run.key, worker_id, "done")
        return Outcome(run.name, "skipped", state.run_id, "finished by another worker")
    for stale in state.running_ids:  # left by a worker that died: we hold the claim, nobody else is on them
        client.set_terminated(stale, "KILLED")
        log.info("marked stale run %s of %s as KILLED", stale, run.name)
    start = time.perf_counter()
    outer = mlflow.active_run()  # under `mlflow run`, the study's own run: left open
    try:
        with Heartbeat(claims, study.name, run.key, worker_id, heartbeat_s):
            run_id = execute(study, run)
    except KeyboardInterrupt:
        claims.finish(study.name, run.key, worker_id, "failed")
        raise
    except Exception as exc:  # one failed run is reported; the study goes on
        claims.finish(study.name, run.key, worker_id, "failed")
        log.exception("run %s failed", run.name)
        return Outcome(run.name, "failed", "", f"{exc.__class__.__name__}: {exc}",
                       time.perf_counter() - start)
    finally:
        _close_runs_above(outer)
    claims.finish(study.name, run.key, worker_id, "done")
    return Outcome(run.name, "ran", run_id, "", time.perf_counter() - start)


def _close_runs_above(outer) -> None:
    """End runs a failed execution left open, so the next run does not nest under them."""
    while (active := mlflow.active_run()) is not None:
        if outer is not None and active.info.run_id == outer.info.run_id:
            return
        mlflow.end_run("FAILED")


def _only(study: Study, run: StudyRun) -> Study:
    return Study(study.name, study.path, study.experiment, [run])


# ---------------------------------------------------------------- after the last run


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def post_study(study: Study, baseline_run_ids: list[str]) -> list[str]:
    """Run the analysis, then the report on its tables, as subprocesses; a failing step only warns."""
    out_dir = Path("outputs") / "studies" / study.name
    # The steps import this project's packages from whatever folder the study runs in.
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "PYTHONPATH": pythonpath}
    notes = []
    analysis_run = ""
    if module_available(ANALYSIS_MODULE):
        includes = [arg for run_id in baseline_run_ids for arg in ("--include", run_id)]
        note, stdout = _step("analysis", [
            sys.executable, "-m", ANALYSIS_MODULE, "--experiment", study.experiment, "--study", study.name,
            "--output", str(out_dir / "analysis"), *includes, *study.analysis_args], env)
        notes.append(note)
        found = re.search(r"analysis run: (\w+)", stdout)
        analysis_run = found.group(1) if found else ""
    else:
        notes.append(f"analysis: skipped ({ANALYSIS_MODULE} is not installed)")
    if not (out_dir / "analysis").is_dir():
        notes.append("report: skipped (no analysis tables)")
    elif module_available(REPORT_MODULE):
        # The report draws the analysis just made, and is logged to its run.
        log_to = ["--log-run", analysis_run] if analysis_run else ["--offline"]
        notes.append(_step("report", [sys.executable, "-m", REPORT_MODULE, "--tables", str(out_dir / "analysis"),
                                      *log_to, "--output", str(out_dir), *study.report_args], env)[0])
    else:
        notes.append(f"report: skipped ({REPORT_MODULE} is not installed)")
    for note in notes:
        log.info("study %s: %s", study.name, note)
    return notes


def _step(name: str, command: list[str], env: dict[str, str]) -> tuple[str, str]:
    """Run one post step; returns a one-line note and the step's stdout."""
    log.info("study post step %s: %s", name, " ".join(command))
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"{name}: failed (exit {proc.returncode}): {' | '.join(tail)}", proc.stdout
    last = proc.stdout.strip().splitlines()[-3:]
    return f"{name}: done: {' | '.join(last)}", proc.stdout
