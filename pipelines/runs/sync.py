"""Send a fine-tune's local record (pipelines.runs.outputs) to MLflow, at most once per point.

Every metric point is appended to the local journal before it is sent, and each checkpoint
epoch is complete on disk before its child run is created. Sending skips what the store already
holds (by metric key and step, and by checkpoint epoch), so the same calls serve three cases:
logging during training, catching up after a resume, and `python -m pipelines.upload_outputs`
after a tracking-server outage. A point logged twice would stay twice in MLflow, hence the care.
"""
from __future__ import annotations

import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run

from pipelines.runs import schema, tracking
from pipelines.runs.outputs import RunOutputs, read_json, read_jsonl, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINT_SPEC = "checkpoint_run.json"
# Tags the parent got from MLflow's run context (user, source, git); checkpoint runs created
# through the client get copies, as runs started with mlflow.start_run(nested=True) would.
CONTEXT_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit",
                "mlflow.source.git.branch")
PROBE_EVERY_S = 30.0  # while offline, how often to check whether the server is back


EXIT_TRACKING_OUTAGE = 75  # EX_TEMPFAIL: try again later (here: upload later)


class TrackingOutageError(RuntimeError):
    """The tracking server stayed unreachable; the run's record is complete on local disk."""


def upload_command(outputs: RunOutputs) -> str:
    """The command that sends a run's local record to the store once it is reachable again."""
    return f"python -m pipelines.upload_outputs {outputs.run_id} --output-dir {outputs.root.parent}"


def logged_steps(client: MlflowClient, run_id: str) -> set[tuple[str, int]]:
    """(metric key, step) of every point the store holds for the run."""
    run = client.get_run(run_id)
    return {(key, m.step) for key in run.data.metrics for m in client.get_metric_history(run_id, key)}


def checkpoint_children(client: MlflowClient, run: Run) -> dict[int, Run]:
    """The checkpoint child runs of `run` by epoch (the first one found for an epoch)."""
    children = client.search_runs(
        [run.info.experiment_id],
        filter_string=(f"tags.`mlflow.parentRunId` = '{run.info.run_id}' "
                       f"and tags.{schema.ROLE} = '{schema.Role.CHECKPOINT}'"),
        max_results=10000,
    )
    by_epoch: dict[int, Run] = {}
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        epoch = child.data.tags.get("checkpoint_epoch") or child.data.params.get("epoch")
        if epoch is not None and epoch.isdigit():
            by_epoch.setdefault(int(epoch), child)
    return by_epoch


@dataclass
class SyncReport:
    """What one sync sent."""

    metric_points: int = 0
    checkpoint_runs: dict[int, str] = field(default_factory=dict)


class RunSync:
    """Journal first, then the store. After an outage outlasting MLflow's retries, it goes offline:
    training keeps writing locally, and every PROBE_EVERY_S it checks whether the server is back
    and, if so, sends everything missed. `sync_all()` at the end raises if it is still away.
    """

    def __init__(self, outputs: RunOutputs, client: MlflowClient | None = None) -> None:
        self.outputs = outputs
        self.client = client or MlflowClient()
        self.run_id = outputs.run_id
        self.offline_since: float | None = None
        self._last_probe = 0.0
        self._journaled = set(outputs.journal_points())
        self._sent = logged_steps(self.client, self.run_id)
        self.checkpoint_runs: dict[int, str] = {}

    # -- what training calls

    def write_checkpoint_spec(self, name: str, tags: dict[str, str], params: dict[str, str]) -> None:
        """Record how checkpoint runs are named, tagged and parametrized (once per run)."""
        path = self.outputs.root / CHECKPOINT_SPEC
        if read_json(path) is None:
            parent = self.client.get_run(self.run_id)
            context = {k: v for k, v in parent.data.tags.items() if k in CONTEXT_TAGS}
            write_json_atomic({"experiment_id": parent.info.experiment_id, "name": name,
                               "tags": {**context, **tags}, "params": params}, path)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Journal the points (NaNs dropped: MLflow cannot plot them), then send the new ones."""
        clean = {k: float(v) for k, v in metrics.items() if v == v}
        fresh = {k: v for k, v in clean.items() if (k, step) not in self._journaled}
        if fresh:
            self.outputs.append_metrics(fresh, step)
            self._journaled.update((k, step) for k in fresh)
        if self._online():
            self._guard(self._send_metrics)

    def log_checkpoint(self, epoch: int) -> str | None:
        """Parent metrics at `epoch` and the epoch's child run, from the complete local folder."""
        metrics = self.outputs.completed_epochs()[epoch]
        self.log_metrics(metrics, step=epoch)
        if self._online():
            return self._guard(self._send_checkpoint, epoch, metrics)
        return None

    def sync_all(self) -> SyncReport:
        """Send every journal point and checkpoint epoch the store lacks; raises if unreachable."""
        report = SyncReport()
        for epoch, metrics in self.outputs.completed_epochs().items():
            fresh = {k: v for k, v in metrics.items() if v == v and (k, epoch) not in self._journaled}
            if fresh:
                self.outputs.append_metrics(fresh, epoch)
                self._journaled.update((k, epoch) for k in fresh)
        try:
            report.metric_points = self._send_metrics()
            for epoch, metrics in self.outputs.completed_epochs().items():
                report.checkpoint_runs[epoch] = self._send_checkpoint(epoch, metrics)
        except Exception as exc:
            if tracking.is_tracking_outage(exc):
                raise TrackingOutageError(str(exc)) from exc
            raise
        self.offline_since = None
        return report

    @property
    def offline(self) -> bool:
        return self.offline_since is not None

    # -- sending

    def _send_metrics(self) -> int:
        missing = [(key, step, value) for (key, step), value in self.outputs.journal_points().items()
                   if (key, step) not in self._sent]
        now = int(time.time() * 1000)
        for start in range(0, len(missing), 1000):  # MLflow's log_batch limit
            chunk = missing[start:start + 1000]
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, s) for k, s, v in chunk])
            self._sent.update((k, s) for k, s, _ in chunk)
        return len(missing)

    def _send_checkpoint(self, epoch: int, metrics: dict[str, float]) -> str:
        """Create (or complete) the child run of `epoch`; a FINISHED one is left as it is."""
        if epoch in self.checkpoint_runs:
            return self.checkpoint_runs[epoch]
        spec = read_json(self.outputs.root / CHECKPOINT_SPEC)
        if spec is None:
            raise RuntimeError(f"{self.outputs.root / CHECKPOINT_SPEC} is missing; cannot log checkpoint runs")
        parent = self.client.get_run(self.run_id)
        child = checkpoint_children(self.client, parent).get(epoch)
        if child is not None and child.info.status == "FINISHED":
            self.checkpoint_runs[epoch] = child.info.run_id
            return child.info.run_id
        if child is None:
            child = self.client.create_run(
                spec["experiment_id"], run_name=f"{spec['name']}-epoch{epoch}",
                tags={**spec["tags"], "mlflow.parentRunId": self.run_id, "checkpoint_epoch": str(epoch)})
        child_id = child.info.run_id
        try:
            have = child.data.params
            params = {"epoch": str(epoch), **spec["params"]}
            new_params = [Param(k, str(v)) for k, v in params.items() if k not in have]
            if new_params:
                self.client.log_batch(child_id, params=new_params)
            sent = logged_steps(self.client, child_id)
            now = int(time.time() * 1000)
            new_metrics = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                           if v == v and (k, epoch) not in sent]
            if new_metrics:
                self.client.log_batch(child_id, metrics=new_metrics)
            folder = self.outputs.epoch_dir(epoch)
            for part in (schema.ADAPTER_DIR, schema.PREDICTIONS_DIR):
                self.client.log_artifacts(child_id, str(folder / part), part)
            tables = {p.stem: read_jsonl(p) for p in sorted((folder / schema.PREDICTIONS_DIR).glob("*.jsonl"))}
            tracking.log_prediction_tables(tables, child_id, self.client)
            self.client.set_terminated(child_id, "FINISHED")
        except BaseException as exc:
            if not tracking.is_tracking_outage(exc):
                with suppress(Exception):
                    self.client.set_terminated(child_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.checkpoint_runs[epoch] = child_id
        log.info("epoch %d checkpoint logged as run %s", epoch, child_id)
        return child_id

    # -- outage handling

    def _guard(self, send, *args: Any) -> Any:
        """Run a send; an outage turns the sync offline instead of failing the fine-tune."""
        try:
            return send(*args)
        except Exception as exc:
            if not tracking.is_tracking_outage(exc):
                raise
            self.offline_since = self._last_probe = time.monotonic()
            log.warning("tracking server unreachable after retries (%s); training goes on and keeps "
                        "everything in %s; it is sent when the server is back", exc, self.outputs.root)
            return None

    def _online(self) -> bool:
        """True unless offline; while offline, probe the server now and then and catch up if it is back."""
        if self.offline_since is None:
            return True
        if time.monotonic() - self._last_probe < PROBE_EVERY_S:
            return False
        self._last_probe = time.monotonic()
        try:
            tracking.check_tracking_uri(mlflow.get_tracking_uri())
            self.sync_all()
        except (tracking.TrackingUnavailableError, TrackingOutageError):
            return False
        log.info("tracking server is back; the metrics and checkpoints logged meanwhile were sent")
        return True
