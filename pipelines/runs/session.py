"""The life of one fine-tune's MLflow run: open (or reopen to resume), sync, end.

`RunSession` is a context manager. On entry it locks the run's local folder, opens a new run
(nested under an active or given parent) or reopens the run being resumed, catches SIGINT and
SIGTERM, and starts the local journal that every metric goes through (pipelines.runs.sync). On
exit it records how the session ended in the local status.json and ends the runs it opened:

| how the block ended          | run status              | raised                                       |
|------------------------------|-------------------------|----------------------------------------------|
| normally                     | FINISHED                | TrackingOutageError if the store stayed away |
| tracking server away         | FINISHED (trained) / FAILED | TrackingOutageError with the upload command |
| SIGINT / SIGTERM / Ctrl-C    | KILLED                  | TrainingInterrupted with the resume command  |
| any other exception          | FAILED                  | the exception                                |

Nothing here knows how a model is trained: the recipe (pipelines.train.recipe) runs inside it.
"""
from __future__ import annotations

import logging
import os
import signal
from contextlib import ExitStack, nullcontext
from pathlib import Path
from types import TracebackType

import mlflow
from mlflow.entities import Run

from pipelines.config import FinetuneConfig
from pipelines.runs import schema, tracking
from pipelines.runs.outputs import ResumableCheckpoint, RunOutputs
from pipelines.runs.signals import GracefulStop, TrainingInterrupted
from pipelines.runs.sync import RunSync, TrackingOutageError, upload_command
from pipelines.train import distributed

log = logging.getLogger(__name__)


class RunSession:
    """One session of a fine-tune's run; `previous` is the run to resume (None: a new run).

    Inside the block: `run_id`, `outputs` (the local folder), `sync` (log through it), `stop`
    (the signal catcher). Set `completed = True` once every epoch is trained, so a store that
    goes away afterwards still leaves the run FINISHED.
    """

    def __init__(self, config: FinetuneConfig, previous: Run | None, parent_run_id: str | None,
                 run_name: str) -> None:
        self.config, self.previous, self.parent_run_id, self.run_name = config, previous, parent_run_id, run_name
        self.completed = False
        self.sync: RunSync | None = None
        self._stack = ExitStack()

    def __enter__(self) -> RunSession:
        try:
            if self.previous is not None:  # refuse before touching the run if another process trains it
                self.outputs = previous_outputs(self.config, self.previous)
                self._stack.enter_context(self.outputs.lock())
            run = self._open_run()
            self.run_id = run.info.run_id
            if self.previous is None:
                self.outputs = RunOutputs.of(self.config.output_dir, self.run_id)
                self._stack.enter_context(self.outputs.lock())
            self.stop = self._stack.enter_context(GracefulStop())
        except BaseException:
            self._stack.close()
            raise
        try:
            self.sync = RunSync(self.outputs)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        with self._stack:
            if exc is None:
                if not self._end("FINISHED"):
                    raise self._outage_error(RuntimeError("could not mark the run FINISHED"))
            elif isinstance(exc, TrackingOutageError):
                self._end("FINISHED" if self.completed else "FAILED", server_away=True,
                          note="the tracking server was unreachable; upload_outputs sends the rest")
                raise self._outage_error(exc) from exc
            elif isinstance(exc, (TrainingInterrupted, KeyboardInterrupt)):
                signum = exc.signum if isinstance(exc, TrainingInterrupted) else (self.stop.signum or signal.SIGINT)
                self._end("KILLED", server_away=self._offline(exc), signal=int(signum))
                raise self._interrupted_error(signum) from None
            else:
                self._end("FAILED", server_away=self._offline(exc))
        return False

    def note_resume(self, checkpoint: ResumableCheckpoint | None) -> float:
        """Tag the reopened run with where it resumed from (and how many times); the epoch."""
        epoch = checkpoint.epoch if checkpoint else 0.0
        resumes = int(self.previous.data.tags.get(schema.RESUMES, "0")) + 1 if self.previous else 1
        mlflow.set_tags({schema.RESUMED_FROM_EPOCH: f"{epoch:g}", schema.RESUMES: str(resumes)})
        if checkpoint is None:
            log.warning("no resumable state in %s: run %s trains again from the start (steps and checkpoints "
                        "already logged are not logged twice)", self.outputs.trainer_dir, self.run_id)
        else:
            log.info("resuming run %s from epoch %g (%s)", self.run_id, epoch, checkpoint.path)
        return epoch

    # ------------------------------------------------------------------ opening and ending

    def _open_run(self) -> mlflow.ActiveRun:
        """A new run (nested under an active or given parent), or the previous run reopened."""
        previous, system_metrics = self.previous, self.config.system_metrics
        if previous is None:
            return mlflow.start_run(run_name=self.run_name, nested=mlflow.active_run() is not None,
                                    parent_run_id=self.parent_run_id, log_system_metrics=system_metrics)
        wrapper = os.environ.get("MLFLOW_RUN_ID")
        if wrapper and wrapper != previous.info.run_id:
            # `mlflow run` created a run for this command: make it a pointer to the run it resumes
            mlflow.MlflowClient().set_tag(wrapper, schema.ROLE, schema.Role.RESUME)
            mlflow.MlflowClient().set_tag(wrapper, schema.RESUMED_RUN_ID, previous.info.run_id)
        else:
            mlflow.set_experiment(experiment_id=previous.info.experiment_id)
        return mlflow.start_run(run_id=previous.info.run_id, log_system_metrics=system_metrics)

    def _end(self, status: str, server_away: bool = False, **info: object) -> bool:
        """Record how this session ended locally, then end the runs it opened; False if the store was away."""
        self.outputs.write_status(status, **info)
        return end_runs_until(self.run_id, status, server_away)

    def _offline(self, exc: BaseException) -> bool:
        """Whether the tracking server is known to be away (ending the run should not wait for it)."""
        return tracking.is_tracking_outage(exc) or bool(self.sync and self.sync.offline)

    def _outage_error(self, exc: BaseException) -> TrackingOutageError:
        return TrackingOutageError(
            f"the tracking server stayed unreachable ({short(exc)}); nothing is lost: adapters, predictions "
            f"and metrics are in {self.outputs.root}; when the server is back, upload them with: "
            f"{upload_command(self.outputs)}")

    def _interrupted_error(self, signum: int) -> TrainingInterrupted:
        checkpoint = self.outputs.latest_checkpoint()
        where = f"epoch {checkpoint.epoch:g}" if checkpoint else "the start (no state saved yet)"
        return TrainingInterrupted(signum, (
            f"interrupted by {signal.Signals(signum).name}: run {self.run_id} is KILLED; resume it from {where} "
            f"with: {distributed.command_prefix()} pipelines.finetune --resume {self.run_id} "
            f"--output-dir {self.outputs.root.parent}"))


def previous_outputs(config: FinetuneConfig, previous: Run) -> RunOutputs:
    """The resumed run's local folder: under --output-dir, else where the run recorded it (tag
    `outputs_path`; e.g. the run was started from another folder, or by `mlflow run`, which works
    in the project folder)."""
    here = RunOutputs.of(config.output_dir, previous.info.run_id)
    recorded = previous.data.tags.get(schema.OUTPUTS_PATH)
    if not here.root.exists() and recorded and Path(recorded).is_dir():
        log.info("resuming with the local folder the run recorded: %s", recorded)
        return RunOutputs(Path(recorded))
    return here


def end_runs_until(run_id: str, status: str, server_away: bool = False) -> bool:
    """End the runs this session opened (any open child, then `run_id`), leaving outer runs open.

    If the store cannot be reached the run stays as it is there (the local status.json and the
    upload command set it later); the local stack of active runs is unwound all the same, and
    the return value is False.
    """
    reached = True
    while (active := mlflow.active_run()) is not None:
        try:
            with tracking.few_retries() if server_away else nullcontext():
                mlflow.end_run(status)
        except Exception as exc:
            if not tracking.is_tracking_outage(exc):
                raise
            reached = False
            log.warning("could not mark run %s %s in the tracking store: %s", active.info.run_id, status, short(exc))
        if active.info.run_id == run_id:
            break
    return reached


def short(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut to `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
