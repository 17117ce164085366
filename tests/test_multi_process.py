"""One fine-tune across two processes: `torchrun --nproc_per_node 2 -m pipelines.finetune` on CPU (gloo).

The two-process run is compared with the single-process run of the same effective batch and
seed (in-process, one torch thread like each rank): one MLflow run with the same metric steps
and checkpoint runs, a final loss within LOSS_TOLERANCE (docs/multi_process.md), an adapter that
loads and scores what the sharded evaluation scored; then a rank is SIGKILLed and the job resumed.
"""
from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import mlflow
import optuna
import psutil
import pytest
import torch
import yaml
from fault_helpers import (
    CONFIG_VALUES,
    Child,
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
from xdist_once import build_once

from pipelines import evaluate, sweep
from pipelines.config import FinetuneConfig
from pipelines.studies.spec import load_study
from pipelines.train.distributed import per_device_batch, shard, unshard
from pipelines.train.recipe import train

# 12 examples, effective batch 2: 6 optimizer steps an epoch, one example per rank and step.
EXTRA = {"batch_size": 2, "train_limit": 12}
OPTIONS = ["--batch-size", "2", "--train-limit", "12", "--device", "cpu"]
LOSS_TOLERANCE = 1e-3  # relative, on train/loss of each epoch (measured: 2e-5)


def torchrun(model_dir: Path, *extra: str) -> list[str]:
    """finetune_command's fine-tune, started by torchrun as two processes."""
    command = finetune_command(model_dir, *OPTIONS, *extra)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *command[1:]]


def _single_run(root: Path, model_dir: Path, migrated_db: Path):
    uri = fresh_store(root, migrated_db)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            result = train(FinetuneConfig(model=str(model_dir), **{**CONFIG_VALUES, **EXTRA}, device="cpu"))
            client = mlflow.MlflowClient(uri)
            return client.get_run(result.run_id).data.params, metric_history(client, result.run_id)
    finally:
        torch.set_num_threads(threads)


def _two_process_run(root: Path, model_dir: Path, migrated_db: Path):
    uri = fresh_store(root, migrated_db)
    done = run_child(torchrun(model_dir), root, child_env(uri), "ddp", timeout=600)
    assert done.proc.returncode == 0, done.stderr()[-4000:]
    return finished_run_id(done.stdout()), uri, done.stderr()


@pytest.fixture(scope="module")
def single(tiny_model_dir, migrated_db, tmp_path_factory):
    return build_once(tmp_path_factory, "ddp-single", lambda root: _single_run(root, tiny_model_dir, migrated_db))


@pytest.fixture(scope="module")
def two(tiny_model_dir, migrated_db, tmp_path_factory):
    return build_once(tmp_path_factory, "ddp-two", lambda root: _two_process_run(root, tiny_model_dir, migrated_db))


def _assert_like_single(client: mlflow.MlflowClient, run_id: str, single) -> mlflow.entities.Run:
    """One FINISHED fine-tune run, each metric step once as in the single-process run, one
    checkpoint run per checkpoint epoch, and train/loss within LOSS_TOLERANCE."""
    _, want = single
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id], "tags.role = 'finetune'")] == [run_id]
    # system/ metrics are sampled by the clock (their steps differ between any two runs)
    got = {k: v for k, v in metric_history(client, run_id).items() if not k.startswith("system/")}
    want = {k: v for k, v in want.items() if not k.startswith("system/")}
    assert set(got) == set(want)
    for key in want:
        steps = [s for s, _ in got[key]]
        assert steps == [s for s, _ in want[key]] and len(set(steps)) == len(steps), (key, got[key], want[key])
    assert [v for _, v in got["train/loss"]] == pytest.approx([v for _, v in want["train/loss"]], rel=LOSS_TOLERANCE)
    children = checkpoint_runs(client, run)
    assert sorted(int(c.data.params["epoch"]) for c in children) == [2, 3]
    assert all(c.info.status == "FINISHED" for c in children)
    return run


def test_two_processes_make_one_run_like_the_single_process_one(two, single):
    run_id, uri, stderr = two
    run = _assert_like_single(mlflow.MlflowClient(uri), run_id, single)
    assert {k: run.data.params[k] for k in ("world_size", "effective_batch_size", "per_device_batch_size",
                                            "per_device_grad_accum")} == {
        "world_size": "2", "effective_batch_size": "2", "per_device_batch_size": "1", "per_device_grad_accum": "1"}
    assert single[0]["world_size"] == "1" and single[0]["per_device_batch_size"] == "2"
    assert stderr.count("checkpoint logged as run") == 2  # rank 0 alone logs


def test_accelerate_launch_makes_the_same_one_run(tiny_model_dir, migrated_db, tmp_path, single):
    """`accelerate launch --multi_gpu` starts the ranks through torchrun's launcher: the same one run."""
    uri = fresh_store(tmp_path, migrated_db)
    command = finetune_command(tiny_model_dir, *OPTIONS)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *command[1:]]
    done = run_child(launch, tmp_path, child_env(uri), "accelerate", timeout=600)
    assert done.proc.returncode == 0, done.stderr()[-4000:]
    run = _assert_like_single(mlflow.MlflowClient(uri), finished_run_id(done.stdout()), single)
    assert run.data.params["world_size"] == "2"


def test_its_adapter_loads_and_scores_what_the_sharded_evaluation_scored(two, tiny_model_dir, monkeypatch,
                                                                         tmp_path):
    run_id, uri, _ = two
    client = mlflow.MlflowClient(uri)
    child = next(c for c in checkpoint_runs(client, client.get_run(run_id)) if c.data.params["epoch"] == "3")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert evaluate.main(["--adapter", child.info.run_id, "--model", str(tiny_model_dir),
                          "--data", CONFIG_VALUES["data"], "--tasks", "harmonization", "--eval-limit", "2",
                          "--max-new-tokens", "4", "--experiment", "faults", "--device", "cpu"]) == 0
    [scored] = client.search_runs([child.info.experiment_id], "tags.role = 'evaluation'")

    def records(rid: str) -> dict[str, str]:
        path = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="predictions/harmonization.jsonl",
                                                  dst_path=str(tmp_path / rid), tracking_uri=uri)
        return {r["id"]: r["output"] for r in map(json.loads, Path(path).read_text().splitlines())}

    assert len(records(child.info.run_id)) == 2 and records(scored.info.run_id) == records(child.info.run_id)
    assert scored.data.metrics["harmonization/accuracy"] == child.data.metrics["harmonization/accuracy"]


def test_effective_batch_rule_and_shards():
    assert per_device_batch(4, 1, 1) == (4, 1) and per_device_batch(4, 1, 2) == (2, 1)
    assert per_device_batch(4, 1, 4) == (1, 1) and per_device_batch(4, 3, 2) == (3, 2)
    assert per_device_batch(2, 4, 8) == (1, 1) and per_device_batch(3, 2, 2) == (3, 1)
    with pytest.raises(ValueError, match="not a multiple of the 3 processes"):
        per_device_batch(4, 1, 3)
    items = list(range(7))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLD_SIZE", "3")
        parts = []
        for rank in range(3):
            mp.setenv("RANK", str(rank))
            parts.append(shard(items))
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and unshard(parts) == items


def _rank_pid(launcher: psutil.Process, rank: int) -> int | None:
    for proc in launcher.children(recursive=True):
        try:
            if proc.environ().get("RANK") == str(rank) and "pipelines.finetune" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    return None


def test_sigkill_of_a_rank_then_sigterm_then_resume_continue_one_run(tiny_model_dir, migrated_db, tmp_path, single):
    uri, outputs = fresh_store(tmp_path, migrated_db), tmp_path / "outputs"
    client = mlflow.MlflowClient(uri)

    # -- SIGKILL of rank 1 in epoch 2: torchrun ends the job; the run is not FINISHED
    job = Child.start(torchrun(tiny_model_dir), tmp_path, child_env(uri), "killed")
    try:
        launcher = psutil.Process(job.proc.pid)
        wait_until(lambda: saved_epochs(outputs), 300, "epoch 1's resumable state", job, every=0.02)
        psutil.Process(_rank_pid(launcher, 1)).kill()
        assert job.wait(120) != 0
    finally:
        job.stop()
    [run] = client.search_runs(client.get_experiment_by_name("faults").experiment_id, "tags.role = 'finetune'")
    run_id = run.info.run_id
    assert run.info.status != "FINISHED" and 1 <= saved_epochs(outputs)[-1] < 3

    # -- --resume; SIGTERM to torchrun once epoch 2 is evaluated: both ranks stop after the same step
    job = Child.start(torchrun(tiny_model_dir, "--resume"), tmp_path, child_env(uri), "resumed")
    try:
        wait_until((outputs / run_id / "epoch-2" / "metrics.json").is_file, 300, "epoch 2's evaluation", job)
        job.proc.send_signal(signal.SIGTERM)
        assert job.wait(120) != 0
    finally:
        job.stop()
    assert client.get_run(run_id).info.status == "KILLED"
    match = re.search(rf"run {run_id} is KILLED; resume it from epoch [\d.]+ with: (torchrun --standalone "
                      r"--nproc_per_node 2 -m pipelines\.finetune --resume \w+ --output-dir \S+)", job.stderr())
    assert match, job.stderr()[-4000:]
    assert job.stderr().count("SIGTERM received") == 2  # torchrun passed it to each rank once

    # -- the printed command finishes the run: the same steps and checkpoint runs as one process
    command = [sys.executable, "-m", "torch.distributed.run", *match.group(1).split()[1:]]
    done = run_child(command, tmp_path, child_env(uri), "done", timeout=600)
    assert done.proc.returncode == 0, done.stderr()[-4000:]
    assert finished_run_id(done.stdout()) == run_id
    assert _assert_like_single(client, run_id, single).data.tags["resumes"] == "2"


def test_a_sweep_trial_with_two_processes_is_nested_reported_and_pruned(tiny_model_dir, migrated_db, tmp_path,
                                                                         monkeypatch):
    """--processes 2: the trial trains under torchrun, its checkpoint hook (the pruner) answers here."""
    space = {"objective": {"metrics": ["harmonization/accuracy"], "direction": "maximize"},
             "sampler": {"name": "random", "seed": 1}, "pruner": {"name": "threshold", "lower": 2.0},
             "evaluate_at": [1, 2],
             "fixed": {"tasks": "harmonization", "data": CONFIG_VALUES["data"], "train_limit": 4, "eval_limit": 2,
                       "batch_size": 2, "epochs": 2, "max_new_tokens": 4},
             "params": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-3}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    uri = fresh_store(tmp_path, migrated_db)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key, value in child_env(uri).items():
        monkeypatch.setenv(key, value)
    assert sweep.main(["--space", "space.yaml", "--n-trials", "1", "--model", str(tiny_model_dir), "--device", "cpu",
                       "--processes", "2", "--study-name", "ddp", "--storage", "sweep.log", "--experiment", "sweeps",
                       "--no-figures"]) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("role") == "sweep"]
    [trial] = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert trial.data.params["world_size"] == "2" and trial.data.params["processes"] == "2"
    assert trial.data.tags["stopped_early"] == "1" and trial.data.tags["optuna_state"] == "PRUNED"
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "sweep/objective")] == [1]
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "train/loss")] == [1]
    study = optuna.load_study(study_name="ddp", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "sweep.log"))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED]


def test_a_study_run_asks_for_processes_without_changing_its_key(tmp_path):
    def study(finetune: dict) -> Path:
        path = tmp_path / f"study-{len(finetune)}.yaml"
        path.write_text(yaml.safe_dump({"name": "ddp", "finetune": {"epochs": 2, "checkpoint_epochs": [2], **finetune},
                                        "runs": [{"name": "one", "tasks": "labeling"}]}))
        return path

    [plain], [shared] = load_study(study({})).runs, load_study(study({"processes": 2})).runs
    assert (plain.config.processes, shared.config.processes) == (1, 2) and plain.key == shared.key
    with pytest.raises(ValueError, match="processes must be >= 1"):
        load_study(study({"processes": 0}))


@pytest.mark.parametrize(("processes", "per_device", "accumulation"), [(2, 2, 1), (2, 1, 2), (4, 1, 1)])
def test_each_step_trains_the_same_examples_whatever_the_number_of_processes(processes, per_device, accumulation):
    """accelerate's BatchSamplerShard deals the sampler's per-device batches to the ranks: the union
    of the ranks' micro-batches of optimizer step k is step k's batch of one process (effective 4)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    from pipelines.train.sampler import EpochSeededLengthSampler

    data = [{"input_ids": [0] * (7 * i % 23 + 1)} for i in range(24)]
    effective = per_device * accumulation * processes
    one = list(EpochSeededLengthSampler(effective, data, seed=5))
    steps = [set(one[i : i + effective]) for i in range(0, len(one), effective)]
    ranks = [list(BatchSamplerShard(BatchSampler(EpochSeededLengthSampler(effective, data, seed=5), per_device, False),
                                    num_processes=processes, process_index=r)) for r in range(processes)]
    for k, want in enumerate(steps):
        got = [i for micro in ranks for batch in micro[k * accumulation : (k + 1) * accumulation] for i in batch]
        assert sorted(got) == sorted(want), k
