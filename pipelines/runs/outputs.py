"""The local folder of one fine-tune, `<output_dir>/<run_id>/`: the durable record of the run.

Everything the MLflow run receives is written here first, so that a run can be resumed after a
crash and uploaded after a tracking-server outage:

    outputs/<run_id>/
      trainer/checkpoint-<step>/   resumable state (LoRA weights, optimizer, scheduler, RNG,
                                   trainer_state.json); only the latest one is kept
      epoch-<N>/adapter/           the LoRA adapter and tokenizer at checkpoint epoch N
      epoch-<N>/predictions/       <task>.jsonl, one record per test example
      epoch-<N>/metrics.json       the metrics at epoch N; written last: the folder is complete
      metrics.jsonl                every metric point of the fine-tune run, appended before logging
      checkpoint_run.json          name, tags and params of the checkpoint child runs
      status.json                  how the last session ended (FINISHED, KILLED, FAILED)
      .lock                        held (flock) by the process training this run
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"  # written last into a Trainer checkpoint
LOSS_CARRY = "loss_carry.json"  # the partial epoch loss of a checkpoint saved mid-epoch


class RunLockedError(RuntimeError):
    """Another process is training this run right now."""


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write JSON through a temporary file and a rename, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable (e.g. cut short by a kill)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (predictions/<task>.jsonl), in order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class ResumableCheckpoint:
    """A complete Trainer checkpoint: where it is and how far training had got."""

    path: Path
    global_step: int
    epoch: float

    @property
    def at_epoch_end(self) -> bool:
        return math.isclose(self.epoch, round(self.epoch), abs_tol=1e-6)


@dataclass(frozen=True)
class RunOutputs:
    """Paths and small records inside `<output_dir>/<run_id>/`."""

    root: Path

    @classmethod
    def of(cls, output_dir: str | Path, run_id: str) -> RunOutputs:
        return cls(Path(output_dir).absolute() / run_id)

    @property
    def run_id(self) -> str:
        return self.root.name

    @property
    def trainer_dir(self) -> Path:
        return self.root / "trainer"

    @property
    def journal(self) -> Path:
        return self.root / "metrics.jsonl"

    def epoch_dir(self, epoch: int) -> Path:
        return self.root / f"epoch-{epoch}"

    # -- metric journal

    def append_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Append metric points (flushed and fsynced) before they are sent to the store."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self.journal.open("a", encoding="utf-8") as fh:
            for key, value in metrics.items():
                fh.write(json.dumps({"key": key, "value": value, "step": step}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def journal_points(self) -> dict[tuple[str, int], float]:
        """(key, step) -> value, first value wins; a line cut short by a kill is skipped."""
        points: dict[tuple[str, int], float] = {}
        if not self.journal.is_file():
            return points
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                points.setdefault((row["key"], int(row["step"])), float(row["value"]))
            except (ValueError, KeyError, TypeError):
                continue
        return points

    # -- checkpoint epochs

    def completed_epochs(self) -> dict[int, dict[str, float]]:
        """Checkpoint epochs whose local folder is complete (metrics.json written), with their metrics."""
        done: dict[int, dict[str, float]] = {}
        for folder in self.root.glob("epoch-*"):
            metrics = read_json(folder / "metrics.json")
            if metrics is not None and folder.name.split("-", 1)[1].isdigit():
                done[int(folder.name.split("-", 1)[1])] = metrics
        return dict(sorted(done.items()))

    # -- resumable Trainer state

    def latest_checkpoint(self) -> ResumableCheckpoint | None:
        """The newest complete Trainer checkpoint; the Trainer writes trainer_state.json last."""
        found: list[ResumableCheckpoint] = []
        for folder in self.trainer_dir.glob("checkpoint-*"):
            state = read_json(folder / TRAINER_STATE)
            if state is None or "global_step" not in state:
                continue
            found.append(ResumableCheckpoint(folder, int(state["global_step"]), float(state.get("epoch") or 0)))
        return max(found, key=lambda c: c.global_step, default=None)

    # -- status of the last session, and the lock of the live one

    def write_status(self, status: str, **info: Any) -> None:
        write_json_atomic({"status": status, **info}, self.root / "status.json")

    def read_status(self) -> dict[str, Any]:
        return read_json(self.root / "status.json") or {}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on this run folder; released by the OS even on SIGKILL."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise RunLockedError(f"run {self.run_id} is being trained right now by {holder} "
                                     f"(lock {self.root / '.lock'}); wait for it or stop it first") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
