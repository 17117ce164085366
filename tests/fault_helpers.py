"""Shared pieces of the fault-injection tests: the tiny fine-tune command, its environment, and polling."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parent.parent
DATA = "synthetic?reports=30&series=30&seed=1"
# 3 epochs of 6 one-example steps (a few seconds each on a busy 2-core machine), evaluations at 2 and 3.
FINETUNE_OPTIONS = ["--data", DATA, "--tasks", "harmonization", "--epochs", "3", "--checkpoint-epochs", "2,3",
                    "--train-limit", "6", "--eval-limit", "2", "--batch-size", "1", "--max-new-tokens", "4",
                    "--learning-rate", "2e-3", "--study", "faults", "--experiment", "faults"]
CONFIG_VALUES = dict(data=DATA, tasks="harmonization", epochs=3, checkpoint_epochs=(2, 3), train_limit=6,
                     eval_limit=2, batch_size=1, max_new_tokens=4, learning_rate=2e-3, study="faults",
                     experiment="faults")


def finetune_command(model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.finetune", "--model", str(model_dir), *FINETUNE_OPTIONS, *extra]


def child_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """The test's environment for a child process: the repo importable, one torch thread, offline."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
           and not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=tracking_uri, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", **extra)
    return env


def fresh_store(folder: Path, migrated_db: Path) -> str:
    """A SQLite store in `folder` from the already migrated template (migrations take ~10 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_db, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@dataclass
class Child:
    """A started process whose stdout and stderr go to files (a pipe nobody reads can block it)."""

    proc: subprocess.Popen
    out: Path
    err: Path

    @classmethod
    def start(cls, cmd: list[str], cwd: Path, env: dict[str, str], name: str) -> Child:
        out, err = cwd / f"{name}.out", cwd / f"{name}.err"
        with out.open("w") as fo, err.open("w") as fe:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fo, stderr=fe, start_new_session=True)
        return cls(proc, out, err)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"timed out after {timeout} s; stderr tail:\n{self.stderr()[-3000:]}") from None

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def run_child(cmd: list[str], cwd: Path, env: dict[str, str], name: str, timeout: float = 300) -> Child:
    child = Child.start(cmd, cwd, env, name)
    child.wait(timeout)
    return child


def wait_until(condition: Callable[[], object], timeout: float, what: str, child: Child | None = None,
               every: float = 0.05) -> object:
    """Poll `condition` until truthy; fail early if `child` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if child is not None and child.proc.poll() is not None:
            raise AssertionError(f"process exited ({child.proc.returncode}) before {what}:\n{child.stderr()[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def saved_epochs(output_dir: Path) -> list[float]:
    """Epochs of the complete resumable checkpoints under output_dir/*/trainer/."""
    epochs = []
    for state in output_dir.glob("*/trainer/checkpoint-*/trainer_state.json"):
        try:
            epochs.append(float(json.loads(state.read_text())["epoch"]))
        except (ValueError, KeyError, OSError):
            continue
    return sorted(epochs)


def finished_run_id(stdout: str) -> str:
    match = re.search(r"Fine-tune finished: run (\w+)", stdout)
    assert match, stdout[-2000:]
    return match.group(1)


def metric_history(client: mlflow.MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as sorted (step, value) points: duplicates would show as repeated steps."""
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in run.data.metrics}


def checkpoint_runs(client: mlflow.MlflowClient, run: mlflow.entities.Run) -> list[mlflow.entities.Run]:
    return client.search_runs([run.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")


def assert_same_history(got: dict, want: dict, rel: float = 1e-4) -> None:
    """Same metric keys, each step once and the same steps, values within `rel` (perf/ timings excepted)."""
    import pytest

    assert set(got) == set(want)
    for key in want:
        steps = [s for s, _ in got[key]]
        assert steps == [s for s, _ in want[key]] and len(steps) == len(set(steps)), (key, got[key], want[key])
        if not key.startswith("perf/"):
            assert [v for _, v in got[key]] == pytest.approx([v for _, v in want[key]], rel=rel, abs=1e-6), key
