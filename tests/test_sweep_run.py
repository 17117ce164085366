"""A tiny sweep run through the entry point: MLflow sweep/trial/checkpoint layout, a pruned trial,
the best trial and figures on the sweep run, and validation-only scoring.

Two workers, one after the other, share one study in a journal file: the first runs two trials
(no pruner), the second joins with a threshold pruner that must prune its trial at epoch 1.
"""
from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from optuna.trial import TrialState
from xdist_once import build_once

from pipelines import finetune, sweep
from pipelines.sweeps.storage import StaleTrialHandler, StorageOptions, open_storage

SPACE = {
    "objective": {"metrics": ["harmonization/accuracy"], "direction": "maximize"},
    "sampler": {"name": "tpe", "seed": 7},
    "pruner": {"name": "none"},
    "evaluate_at": [1, 2],
    "fixed": {"tasks": "harmonization", "data": "synthetic?reports=40&series=40", "train_limit": 4,
              "eval_limit": 2, "batch_size": 2, "epochs": 2, "max_new_tokens": 8, "eval_batch_size": 2},
    "params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
               "lora_r": {"type": "categorical", "choices": [2, 4]}},
}
# Accuracy is at most 1, so this pruner stops every trial at its first evaluation.
MUST_PRUNE = {**SPACE, "pruner": {"name": "threshold", "lower": 2.0}}
FIGURES = {"optimization_history", "param_importances", "parallel_coordinate", "slice"}


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert sweep.main(argv) == 0
    return out.getvalue()


def _run_sweeps(root: Path, model: Path) -> dict:
    """The two workers, one after the other, in `root`; returns where their results are."""
    import torch

    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    (root / "prune.yaml").write_text(yaml.safe_dump(MUST_PRUNE))
    common = ["--model", str(model), "--study-name", "tiny", "--storage", "sweep.log",
              "--experiment", "sweeps"]
    uri = f"sqlite:///{root / 'mlflow.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread each avoids oversubscription
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            mp.setenv("MLFLOW_TRACKING_URI", uri)
            mp.delenv("MLFLOW_RUN_ID", raising=False)
            mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
            first = _run(["--space", "space.yaml", "--n-trials", "2", *common])
            second = _run(["--space", "prune.yaml", "--n-trials", "1", "--no-figures", *common])
    finally:
        torch.set_num_threads(threads)
    return {"uri": uri, "journal": str(root / "sweep.log"), "out": (first, second)}


@pytest.fixture(scope="session")
def tiny_sweep(tiny_model_dir, tmp_path_factory) -> dict:
    built = build_once(tmp_path_factory, "sweep-run", lambda root: _run_sweeps(root, tiny_model_dir))
    storage = open_storage(StorageOptions(built["journal"]), StaleTrialHandler(0))
    client = mlflow.MlflowClient(built["uri"])
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id], max_results=200)
    return {**built, "study": optuna.load_study(study_name="tiny", storage=storage), "client": client,
            "runs": runs}


def _artifact(tiny_sweep, run_id: str, path: str) -> Path:
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    tracking_uri=tiny_sweep["uri"]))


def _by_role(runs, role):
    return [r for r in runs if r.data.tags.get("role") == role]


def test_sweep_runs_and_nested_trial_runs(tiny_sweep):
    study, runs = tiny_sweep["study"], tiny_sweep["runs"]
    sweeps = {r.info.run_id: r for r in _by_role(runs, "sweep")}
    assert len(sweeps) == 2  # one per worker, both tagged with the Optuna study
    for run in sweeps.values():
        assert run.info.status == "FINISHED" and run.data.tags["optuna_study"] == "tiny"
        assert run.data.params["objective"] == "harmonization/accuracy"
        assert run.data.params["direction"] == "maximize" and run.data.tags["direction"] == "maximize"
        assert run.data.params["storage"] == "sweep.log"
    assert {r.data.params["pruner"] for r in sweeps.values()} == {"none()", "threshold(lower=2.0)"}
    trials = {int(r.data.tags["optuna_trial_number"]): r for r in _by_role(runs, "trial")}
    assert sorted(trials) == [t.number for t in study.trials] == [0, 1, 2]
    for trial in study.trials:
        run = trials[trial.number]
        assert run.data.tags["mlflow.parentRunId"] in sweeps
        assert run.data.tags["mlflow.parentRunId"] == trial.user_attrs["mlflow_parent_run_id"]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna_state"] == trial.state.name
        assert run.data.tags["study"] == "tiny" and run.info.status == "FINISHED"
        assert float(run.data.params["learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert run.data.params["lora_r"] == str(trial.params["lora_r"])
    for number in (0, 1):
        assert study.trials[number].state == TrialState.COMPLETE
        history = tiny_sweep["client"].get_metric_history(trials[number].info.run_id, "sweep/objective")
        assert sorted(m.step for m in history) == [1, 2]
        assert study.trials[number].intermediate_values.keys() == {1, 2}
    checkpoints = _by_role(runs, "checkpoint")
    parents = {r.data.tags["mlflow.parentRunId"] for r in checkpoints}
    assert parents == {r.info.run_id for r in trials.values()}


def test_pruned_trial_is_pruned_in_optuna_and_mlflow(tiny_sweep):
    study, runs = tiny_sweep["study"], tiny_sweep["runs"]
    pruned = study.trials[2]
    assert pruned.state == TrialState.PRUNED and list(pruned.intermediate_values) == [1]
    (run,) = [r for r in _by_role(runs, "trial") if r.data.tags["optuna_trial_number"] == "2"]
    assert run.data.tags["optuna_state"] == "PRUNED" and run.data.tags["stopped_early"] == "1"
    children = [r for r in _by_role(runs, "checkpoint")
                if r.data.tags["mlflow.parentRunId"] == run.info.run_id]
    assert [c.data.params["epoch"] for c in children] == ["1"]  # stopped before epoch 2
    second = next(r for r in _by_role(runs, "sweep") if r.data.params["pruner"].startswith("threshold"))
    assert second.data.metrics["trials/pruned"] == 1 and second.data.metrics["trials/complete"] == 2


def test_sweep_run_holds_best_trial_and_figures(tiny_sweep):
    study, client = tiny_sweep["study"], tiny_sweep["client"]
    first = next(r for r in _by_role(tiny_sweep["runs"], "sweep") if r.data.params["pruner"] == "none()")
    best = study.best_trial
    assert first.data.tags["best_trial_number"] == str(best.number)
    assert first.data.metrics["best_value"] == best.value
    assert float(first.data.params["best/learning_rate"]) == pytest.approx(best.params["learning_rate"])
    assert first.data.tags["best_trial_run_id"] == best.user_attrs["mlflow_run_id"]
    paths = {a.path for a in client.list_artifacts(first.info.run_id, "figures")}
    assert paths == {f"figures/{name}.html" for name in FIGURES}
    local = _artifact(tiny_sweep, first.info.run_id, "figures/slice.html")
    assert "<script src=" not in local.read_text()[:5000]  # plotly.js inlined
    sweep_files = {a.path for a in client.list_artifacts(first.info.run_id, "sweep")}
    assert {"sweep/summary.json", "sweep/trials.csv", "sweep/space.json", "sweep/figures.json"} <= sweep_files
    summary = json.loads(_artifact(tiny_sweep, first.info.run_id, "sweep/summary.json").read_text())
    assert summary["own_trials"] == [0, 1] and summary["best_trial"] == best.number


def test_trials_score_on_validation_examples_never_test(tiny_sweep):
    run = next(r for r in _by_role(tiny_sweep["runs"], "trial") if r.data.tags["optuna_trial_number"] == "0")
    assert run.data.params["eval_split"] == "validation"
    manifest = json.loads(_artifact(tiny_sweep, run.info.run_id, "data/split_manifest.json").read_text())
    manifest = manifest["datasets"]["series"]
    checkpoint = next(r for r in _by_role(tiny_sweep["runs"], "checkpoint")
                      if r.data.tags["mlflow.parentRunId"] == run.info.run_id)
    predictions = _artifact(tiny_sweep, checkpoint.info.run_id, "predictions/harmonization.jsonl")
    lines = predictions.read_text().splitlines()
    ids = {json.loads(line)["id"].split("/", 1)[1] for line in lines}
    assert ids and ids <= set(manifest["train"]) and not ids & set(manifest["test"])


def test_end_of_sweep_prints_the_best_trial_as_a_finetune_command(tiny_sweep):
    first, second = tiny_sweep["out"]
    best = tiny_sweep["study"].best_trial
    lines = first.splitlines()
    command = lines[lines.index("Re-run it as a full fine-tune (scored on the test split):") + 1].strip()
    config = finetune.parse_args(shlex.split(command)[3:])
    assert config.learning_rate == pytest.approx(best.params["learning_rate"])
    assert config.lora_r == best.params["lora_r"] and config.eval_split == "test"
    assert config.tasks == ("harmonization",) and config.checkpoint_epochs == (1, 2)
    assert "--optuna-study tiny" in second and '"PRUNED": 1' in second
