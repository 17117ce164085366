"""`mlflow run . -e finetune` end to end on tiny settings, against a temporary tracking store."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def mlflow_env(tmp_path: Path, experiment: str | None) -> dict[str, str]:
    """Environment for a child `mlflow run`: the venv first on PATH, a private store, offline;
    experiment None: none chosen (`mlflow run` then creates its run in Default)."""
    env = dict(os.environ)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)  # set_experiment in this process exports the id; mlflow run refuses both
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if experiment:
        env["MLFLOW_EXPERIMENT_NAME"] = experiment
    env["HF_HUB_OFFLINE"] = "1"
    return env


def all_runs(tmp_path: Path) -> list:
    """Every run of the store in tmp_path, deleted ones too."""
    from mlflow.entities import ViewType

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True, run_view_type=ViewType.ALL, output_format="list")


def wait_until_deleted(tmp_path: Path, timeout_s: float = 90.0) -> list:
    """The store's runs once the Default experiment holds no active run: `mlflow run` created its
    run there; a reaper deletes it once `mlflow run` has ended it."""
    def waiting() -> bool:
        return any(r.info.experiment_id == "0" and r.info.lifecycle_stage == "active" for r in all_runs(tmp_path))

    deadline = time.monotonic() + timeout_s
    while waiting() and time.monotonic() < deadline:
        time.sleep(1)
    return all_runs(tmp_path)


def test_numeric_parameters_are_typed():
    """MLflow's numeric type is float; lists, switches, names and "" stay strings."""
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    for entry, body in spec["entry_points"].items():
        for name, param in body["parameters"].items():
            default = str(param.get("default", ""))
            numeric = bool(re.fullmatch(r"-?[0-9.]+(e-?[0-9]+)?", default))
            assert (param["type"] == "float") == numeric, f"{entry}.{name}: {param}"


@pytest.mark.xdist_group("mlflow_run")
def test_a_misspelled_parameter_is_refused_by_name_and_leaves_no_run(tmp_path):
    """`-P epoch=3` (for epochs) under a real `mlflow run`: refused by name before any model is
    loaded, and the run MLflow created is deleted."""
    cmd = ["mlflow", "run", str(ROOT), "-e", "finetune", "--env-manager", "local", "-P", "epoch=3"]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, env=mlflow_env(tmp_path, None), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 120
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unrecognized arguments: --epoch 3; did you mean --epochs? (--help lists the options)"]
    assert "converting" not in proc.stderr and "training" not in proc.stderr  # no model was loaded
    runs = wait_until_deleted(tmp_path)
    assert len(runs) == 1 and runs[0].info.lifecycle_stage == "deleted", runs
    assert "--epoch 3" in runs[0].data.tags["failure_reason"]


def test_finetune_parameters_match_the_issue_and_defaults_are_the_demo():
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    params = spec["entry_points"]["finetune"]["parameters"]
    required = {"model", "tasks", "data", "epochs", "checkpoint_epochs", "batch_size", "learning_rate",
                "lora_r", "poison_rate", "seed", "train_limit", "eval_limit"}
    assert required <= set(params)
    for name in params:
        assert "{" + name + "}" in spec["entry_points"]["finetune"]["command"], name
    from pipelines.config import DEMO_PRESET

    for name, value in DEMO_PRESET.items():
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        assert float(params[name]["default"].split(",")[0]) == float(shown.split(",")[0]), name


@pytest.mark.xdist_group("mlflow_run")
def test_mlflow_run_finetune_end_to_end(tiny_model_dir, tmp_path):
    cmd = [
        "mlflow", "run", str(ROOT), "-e", "finetune", "--env-manager", "local",
        "-P", f"model={tiny_model_dir}", "-P", "data=synthetic?reports=30&series=30",
        "-P", "tasks=labeling,harmonization", "-P", "epochs=2", "-P", "checkpoint_epochs=1,2",
        "-P", "train_limit=3", "-P", "eval_limit=2", "-P", "learning_rate=8e-4", "-P", "study=e2e",
        "-P", "max_new_tokens=24",
    ]
    # no --experiment-name: MLflow creates its run in Default; the fine-tune moves to clinical-slm
    proc = subprocess.run(cmd, cwd=tmp_path, env=mlflow_env(tmp_path, None), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlflow ui --backend-store-uri" in proc.stdout
    left = wait_until_deleted(tmp_path)
    assert [r.info.lifecycle_stage for r in left if r.info.experiment_id == "0"] == ["deleted"]

    runs = mlflow.search_runs(experiment_names=["clinical-slm"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("role") == "finetune"]
    children = [r for r in runs if r.data.tags.get("role") == "checkpoint"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # mlflow run logged the user's spelling; ours did not clash with it.
    assert parent.data.params["learning_rate"] == "8e-4"
    assert parent.data.params["study"] == "e2e" and parent.data.tags["study"] == "e2e"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["epoch"] for c in children) == ["1", "2"]

    # the config the run logged, passed back with --config, is the run's config
    from pipelines.finetune import parse_args

    logged = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="config/finetune.yaml",
                                                 dst_path=str(tmp_path / "logged"))
    same_options = ["--model", str(tiny_model_dir), "--data", "synthetic?reports=30&series=30", "--tasks",
                    "labeling,harmonization", "--epochs", "2", "--checkpoint-epochs", "1,2", "--train-limit", "3",
                    "--eval-limit", "2", "--learning-rate", "8e-4", "--study", "e2e", "--max-new-tokens", "24"]
    assert parse_args(["--config", logged]) == parse_args(same_options)
    assert parse_args(["--config", logged, "--preset", "paper"]) == parse_args(same_options)
