"""Start one fine-tune as N processes with torchrun from a process that is not one of them.

`train(config)` with `config.processes` > 1 comes here: `finetune --processes N`, a study run
with `processes: N`, a sweep's trials with `--processes N`. torchrun runs
`python -m pipelines.train.rank FOLDER` N times; every rank calls train() on the request in FOLDER,
and rank 0 writes back what it returned, or how it failed. The checkpoint hook (a sweep's
pruner) stays in this process: rank 0 writes each evaluation's metrics to FOLDER and waits for
the answer. SIGINT/SIGTERM here are passed on to torchrun once, which passes them to the ranks.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow

from pipelines.config import FinetuneConfig
from pipelines.runs.outputs import read_json, write_json_atomic
from pipelines.runs.signals import GracefulStop, TrainingInterrupted
from pipelines.runs.sync import TrackingOutageError
from pipelines.train import distributed
from pipelines.train.prepare import CheckpointHook, FinetuneResult

REQUEST, RESULT = "request.json", "result.json"
POLL_S = 0.2
STOP_WAIT_S = 60  # after a second signal: how long torchrun gets to end the ranks


def launch_command(processes: int, folder: Path) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, the same interpreter) on one machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "pipelines.train.rank", str(folder)]


def launch_train(config: FinetuneConfig, on_checkpoint: CheckpointHook | None = None,
                 run_tags: dict[str, str] | None = None, parent_run_id: str | None = None,
                 resume: str | None = None) -> FinetuneResult:
    """train() across `config.processes` processes; returns (or raises) what its rank 0 did."""
    distributed.per_device_batch(config.batch_size, config.grad_accum, config.processes)  # before starting
    active = mlflow.active_run()  # a sweep's trials are nested in the sweep run
    parent = parent_run_id or (active.info.run_id if active else None)
    with tempfile.TemporaryDirectory(prefix="finetune-launch-") as tmp:
        folder = Path(tmp)
        write_json_atomic({"config": config.to_dict(), "run_tags": run_tags, "parent_run_id": parent,
                           "resume": resume, "hook": on_checkpoint is not None}, folder / REQUEST)
        env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
        code = _supervise(subprocess.Popen(launch_command(config.processes, folder), env=env,
                                           start_new_session=True), folder, on_checkpoint)
        return _result(read_json(folder / RESULT), code, config)


def _supervise(proc: subprocess.Popen, folder: Path, hook: CheckpointHook | None) -> int:
    """Wait for torchrun, answering the hook's questions and passing a first signal on to it."""
    forwarded = False
    try:
        with GracefulStop() as stop:
            while proc.poll() is None:
                if stop.requested and not forwarded:
                    proc.send_signal(stop.signum)
                    forwarded = True
                for question in sorted(folder.glob("question-*.json")):
                    _answer(question, hook)
                time.sleep(POLL_S)
    except BaseException:  # a second signal, or the hook failed: stop the job before going
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_WAIT_S)
        raise
    return proc.returncode


def _answer(question: Path, hook: CheckpointHook | None) -> None:
    asked = read_json(question)
    if asked is None:  # being written
        return
    stop = bool(hook and hook(asked["run_id"], int(asked["epoch"]), asked["metrics"]))
    write_json_atomic({"stop": stop}, question.with_name(question.name.replace("question", "answer")))
    question.unlink()


def _result(record: dict[str, Any] | None, code: int, config: FinetuneConfig) -> FinetuneResult:
    """The FinetuneResult rank 0 wrote, or its failure raised again here."""
    if record is None:
        raise RuntimeError(f"the {config.processes}-process fine-tune ended (torchrun exit status {code}) before "
                           "its rank 0 reported; see the log above; --resume continues it from its last saved state")
    failure = record.get("failure")
    if failure == "interrupted":
        raise TrainingInterrupted(record["signum"], record["message"])
    if failure == "outage":
        raise TrackingOutageError(record["message"])
    if failure:
        raise (ValueError if failure == "ValueError" else RuntimeError)(record["message"])
    fields = record["result"]
    return FinetuneResult(
        run_id=fields["run_id"], checkpoint_runs={int(k): v for k, v in fields["checkpoint_runs"].items()},
        metrics={int(k): v for k, v in fields["metrics"].items()}, output_dir=Path(fields["output_dir"]),
        stopped_early_at=fields["stopped_early_at"], resumed_from_epoch=fields["resumed_from_epoch"],
        trained=fields["trained"])


def ask_launcher(folder: Path):
    """Rank 0's checkpoint hook: the question goes to the launching process, which answers it."""
    def hook(run_id: str, epoch: int, metrics: dict[str, float]) -> bool:
        answer = folder / f"answer-{epoch}.json"
        write_json_atomic({"run_id": run_id, "epoch": epoch, "metrics": metrics}, folder / f"question-{epoch}.json")
        while (reply := read_json(answer)) is None:
            time.sleep(POLL_S)
        answer.unlink()
        return bool(reply["stop"])

    return hook
