"""Run a study: every missing run in order, in-process, claimed so workers never overlap; then the
analysis and the report, also in-process, when the whole study is finished.

Resumable: a run with a FINISHED MLflow run is skipped; a FAILED or KILLED one, or one left
RUNNING by a worker that stopped heart-beating, is run again (the stale MLflow run is marked
KILLED). One failing run is reported and the others go on, unless fail_fast.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import mlflow
from mlflow.tracking import MlflowClient

from pipelines.baselines.config import BaselineConfig
from pipelines.runs import tracking
from pipelines.studies.claims import HEARTBEAT_S, ClaimStore, Heartbeat
from pipelines.studies.plan import run_states
from pipelines.studies.spec import Study, StudyRun

log = logging.getLogger(__name__)

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
    from pipelines.train.recipe import train

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


def post_study(study: Study, baseline_run_ids: list[str]) -> list[str]:
    """Run the analysis, then the report on its tables, in-process; a failing step only warns.

    Both steps read and log to the store the study uses (MLflow's current tracking URI), each in a
    thread of its own: MLflow's active run is per thread, so the study's own run (under `mlflow run`)
    is not one they would collide with, and they log runs of their own.
    """
    out_dir = Path("outputs") / "studies" / study.name
    # As the steps' entry points do: a progress bar per downloaded run is noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(mlflow.get_tracking_uri())
    includes = [arg for run_id in baseline_run_ids for arg in ("--include", run_id)]
    analysis_argv = ["--experiment", study.experiment, "--study", study.name,
                     "--output", str(out_dir / "analysis"), *includes, *study.analysis_args]
    note, analysis_run = _step(study, "analysis", analyze_step, analysis_argv, client)
    notes = [note]
    if not (out_dir / "analysis").is_dir():
        notes.append("report: skipped (no analysis tables)")
        log.info("study %s: %s", study.name, notes[-1])
    else:
        # The report draws the analysis just made, and is logged to its run.
        log_to = ["--log-run", analysis_run] if analysis_run else ["--offline"]
        report_argv = ["--tables", str(out_dir / "analysis"), *log_to, "--output", str(out_dir),
                       *study.report_args]
        notes.append(_step(study, "report", report_step, report_argv, client)[0])
    return notes


def analyze_step(argv: list[str], client: MlflowClient) -> tuple[str, str]:
    """`python -m analysis.analyze ARGV` as library calls on `client`'s store: returns a one-line
    summary and the analysis run id ('' when nothing was logged)."""
    from analysis.analyze import build_parser, config_from_args
    from analysis.job import publish, run_analysis
    from analysis.outputs import default_output_dir

    args = _parse(build_parser(), argv)
    _same_store(args, client)
    result = run_analysis(config_from_args(args), client)
    out_dir = Path(args.output) if args.output else default_output_dir("analyze")
    run_id = publish(result, out_dir, log_to_mlflow=args.log, experiment=args.log_experiment or None) or ""
    summary = f"{len(result.runs)} runs analyzed against reference {result.reference.run_id} | tables: {out_dir}"
    return summary + (f" | analysis run: {run_id}" if run_id else ""), run_id


def report_step(argv: list[str], client: MlflowClient) -> tuple[str, str]:
    """`python -m dashboards ARGV` (with --tables) as library calls on `client`'s store: returns a
    one-line summary and the run the report was logged to ('' when none)."""
    from analysis.outputs import default_output_dir
    from dashboards.__main__ import build_parser, options_from_args
    from dashboards.report import report_from_tables

    args = _parse(build_parser(), argv)
    _same_store(args, client)
    if args.analysis_run:
        raise ValueError("give --analysis-run or --tables, not both")
    out_dir = Path(args.output) if args.output else default_output_dir("report")
    result = report_from_tables(Path(args.tables), options_from_args(args), out_dir, args.log_run or None,
                                not args.offline, Path(args.cache_dir), client)
    summary = f"{result.html} ({len(result.report.figures)} figures)"
    return summary + (f" | logged to run {result.run_id}" if result.run_id else ""), result.run_id or ""


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse a step's arguments; a usage error raises ValueError instead of exiting the study."""
    def refuse(message: str) -> NoReturn:
        raise ValueError(f"{message} (in: {' '.join(argv)})")

    parser.error = refuse  # type: ignore[method-assign]
    return parser.parse_args(argv)


def _same_store(args: argparse.Namespace, client: MlflowClient) -> None:
    """A study's post steps use the study's store: refuse a --tracking-uri naming another."""
    if args.tracking_uri and args.tracking_uri != client.tracking_uri:
        raise ValueError(f"--tracking-uri {tracking.shown_uri(args.tracking_uri)}: the post steps use the "
                         f"study's store, {tracking.shown_uri(client.tracking_uri)}")


Step = Callable[[list[str], MlflowClient], tuple[str, str]]  # (argv, client) -> (summary, run id)


def _step(study: Study, name: str, step: Step, argv: list[str], client: MlflowClient) -> tuple[str, str]:
    """Run one post step in a thread of its own (see post_study); returns a one-line note, logged
    (a failure as one warning line), and the run id it gave ('' when none or when it failed)."""
    log.info("study post step %s: %s", name, " ".join(argv))
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(step(argv, client))
        except BaseException as exc:  # handed to the study's thread below
            errors.append(exc)

    # A daemon thread: interrupting the study (Ctrl-C) does not wait for the step to end.
    thread = threading.Thread(target=target, name=f"study-post-{name}", daemon=True)
    thread.start()
    thread.join()
    if errors and not isinstance(errors[0], Exception):
        raise errors[0]  # KeyboardInterrupt, SystemExit: not a step failure
    if errors:
        note = f"{name}: failed: {errors[0].__class__.__name__}: {' '.join(str(errors[0]).split())}"
        log.warning("study %s: %s", study.name, note)
        log.debug("study post step %s failed", name, exc_info=errors[0])
        return note, ""
    summary, run_id = results[0]
    note = f"{name}: done: {summary}"
    log.info("study %s: %s", study.name, note)
    return note, run_id
