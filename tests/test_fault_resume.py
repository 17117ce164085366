"""Real faults during a fine-tune: SIGKILL mid-epoch then --resume, SIGTERM and SIGINT.

Each scenario runs `python -m pipelines.finetune` on the tiny model as a child process with its
own SQLite store, injects the signal with os.kill while an epoch is in progress, and compares the
outcome with an uninterrupted run of the same config and seed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from fault_helpers import (
    CONFIG_VALUES,
    Child,
    assert_same_history,
    checkpoint_runs,
    child_env,
    finetune_command,
    finished_run_id,
    fresh_store,
    metric_history,
    run_child,
    saved_epochs,
    wait_until,
)
from safetensors.torch import load_file
from xdist_once import build_once

from pipelines import finetune
from pipelines.config import FinetuneConfig
from pipelines.train.recipe import FinetuneResult, train


def _reference_run(root: Path, model_dir: Path, migrated_db: Path) -> tuple[FinetuneResult, dict, Path]:
    """The uninterrupted fine-tune, in-process with one torch thread like the child processes."""
    uri = fresh_store(root, migrated_db)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            result = train(FinetuneConfig(model=str(model_dir), **CONFIG_VALUES))
            return result, metric_history(mlflow.MlflowClient(uri), result.run_id), root
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, migrated_db, tmp_path_factory):
    return build_once(tmp_path_factory, "fault-reference",
                      lambda root: _reference_run(root, tiny_model_dir, migrated_db))


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter" / "adapter_model.safetensors")


def _assert_matches_reference(run_id: str, root: Path, uri: str, reference) -> mlflow.entities.Run:
    """The resumed run holds exactly the reference's metric steps and checkpoint runs, same values."""
    ref_result, ref_history, ref_root = reference
    client = mlflow.MlflowClient(uri)
    ref_client = mlflow.MlflowClient(f"sqlite:///{ref_root / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    finetunes = client.search_runs([run.info.experiment_id], filter_string="tags.role = 'finetune'")
    assert [r.info.run_id for r in finetunes] == [run_id]  # resumed into the same run, no new one
    assert_same_history(metric_history(client, run_id), ref_history)
    children = checkpoint_runs(client, run)
    assert sorted(int(c.data.params["epoch"]) for c in children) == [2, 3]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["role"] == "checkpoint"
        epoch = int(child.data.params["epoch"])
        ref_child = ref_client.get_run(ref_result.checkpoint_runs[epoch])
        assert child.data.metrics.keys() == ref_child.data.metrics.keys()
        assert {k: v for k, v in child.data.metrics.items() if not k.startswith("perf/")} == pytest.approx(
            {k: v for k, v in ref_child.data.metrics.items() if not k.startswith("perf/")}, rel=1e-4)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "adapter")}
        assert "adapter/adapter_model.safetensors" in artifacts
        assert [a.path for a in client.list_artifacts(child.info.run_id, "predictions")] == [
            "predictions/harmonization.json", "predictions/harmonization.jsonl"]  # the table, logged once
        local = Path(client.download_artifacts(child.info.run_id, "predictions", str(root / "dl" / str(epoch))))
        table = json.loads((local / "harmonization.json").read_text())  # log_table's split orient
        assert len(table["data"]) == len((local / "harmonization.jsonl").read_text().splitlines())
    for epoch in (2, 3):  # the trained weights themselves
        got = _adapter(root / "outputs" / run_id / f"epoch-{epoch}")
        want = _adapter(ref_result.output_dir / f"epoch-{epoch}")
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    assert not (root / "outputs" / run_id / "trainer").exists()  # resumable state dropped once FINISHED
    return run


def _signal_when(child: Child, condition, what: str, sig: int) -> Child:
    """Wait until `condition()` holds (polling every 50 ms), send `sig`, wait for the exit."""
    try:
        wait_until(condition, 300, what, child)
        os.kill(child.proc.pid, sig)
        child.wait(120)
    finally:
        child.stop()
    return child


def _saved(outputs: Path, epoch: int):
    return lambda: any(e >= epoch for e in saved_epochs(outputs))


def _stopped_message(child: Child, signame: str) -> re.Match:
    """The last stderr line: which run is KILLED and the exact command that resumes it."""
    last = child.stderr().strip().splitlines()[-1]
    match = re.search(rf"^error: interrupted by {signame}: run (\w+) is KILLED; resume it from epoch [\d.]+ with: "
                      r"(python -m pipelines\.finetune --resume \w+ --output-dir \S+)$", last)
    assert match, last
    return match


def test_sigkill_then_sigterm_then_resume_match_an_uninterrupted_run(tiny_model_dir, migrated_db, tmp_path,
                                                                      reference):
    uri, outputs = fresh_store(tmp_path, migrated_db), tmp_path / "outputs"
    client = mlflow.MlflowClient(uri)

    # -- SIGKILL in epoch 2: nothing runs on the way out; MLflow leaves the run RUNNING
    killed = _signal_when(Child.start(finetune_command(tiny_model_dir), tmp_path, child_env(uri), "killed"),
                          _saved(outputs, 1), "epoch 1's resumable state", signal.SIGKILL)
    assert killed.proc.returncode == -signal.SIGKILL
    assert saved_epochs(outputs) == [1.0]  # killed mid-epoch 2: epoch 1's state is the latest
    [run] = client.search_runs(client.get_experiment_by_name("faults").experiment_id)
    assert run.info.status == "RUNNING"
    run_id = run.info.run_id
    assert [s for s, _ in metric_history(client, run_id)["train/loss"]] == [1]

    # -- `--resume` finds it (latest unfinished, same params); SIGTERM once epoch 2 is evaluated
    resumed = Child.start(finetune_command(tiny_model_dir, "--resume"), tmp_path, child_env(uri), "resumed")
    stopped = _signal_when(resumed, (outputs / run_id / "epoch-2" / "metrics.json").is_file,
                           "epoch 2's evaluation", signal.SIGTERM)
    assert stopped.proc.returncode == 128 + signal.SIGTERM, stopped.stderr()[-3000:]
    match = _stopped_message(stopped, "SIGTERM")
    assert match.group(1) == run_id
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["resumed_from_epoch"] == "1"
    assert all(c.info.status == "FINISHED" for c in checkpoint_runs(client, run))
    # the state at the signal was saved mid-epoch 3, with the partial loss of that epoch
    [state] = (outputs / run_id / "trainer").glob("checkpoint-*")
    assert 2 < saved_epochs(outputs)[-1] < 3 and (state / "loss_carry.json").is_file()

    # -- the printed command continues it to the end
    done = run_child([sys.executable, *match.group(2).split()[1:]], tmp_path, child_env(uri), "done")
    assert done.proc.returncode == 0, done.stderr()[-3000:]
    assert finished_run_id(done.stdout()) == run_id
    run = _assert_matches_reference(run_id, tmp_path, uri, reference)
    assert run.data.tags["resumes"] == "2"


def test_sigint_ends_run_killed_and_resume_checks_the_options(tiny_model_dir, migrated_db, tmp_path, monkeypatch,
                                                              capsys, reference):
    uri = fresh_store(tmp_path, migrated_db)
    stopped = _signal_when(Child.start(finetune_command(tiny_model_dir), tmp_path, child_env(uri), "stopped"),
                           _saved(tmp_path / "outputs", 1), "epoch 1's resumable state", signal.SIGINT)
    assert stopped.proc.returncode == 128 + signal.SIGINT, stopped.stderr()[-3000:]
    run_id = _stopped_message(stopped, "SIGINT").group(1)
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    [state] = (tmp_path / "outputs" / run_id / "trainer").glob("checkpoint-*")
    assert 1 < saved_epochs(tmp_path / "outputs")[-1] < 2 and (state / "loss_carry.json").is_file()

    # --resume RUN_ID takes the run's params; options that contradict them are refused before any change
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert finetune.main(["--resume", run_id, "--epochs", "5"]) == 2
    assert "epochs (run: 3, now: 5)" in capsys.readouterr().err
    assert client.get_run(run_id).info.status == "KILLED"
    assert finetune.main(["--resume", "0123456789abcdef0123456789abcdef"]) == 2
    assert "no such run" in capsys.readouterr().err
    ref_result, _, ref_root = reference
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ref_root / 'mlflow.db'}")
    assert finetune.main(["--resume", ref_result.run_id]) == 2
    assert "already FINISHED" in capsys.readouterr().err
