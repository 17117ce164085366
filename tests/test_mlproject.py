"""`mlflow run . -e finetune` end to end on tiny settings, against a temporary tracking store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def mlflow_env(tmp_path: Path, experiment: str) -> dict[str, str]:
    """Environment for a child `mlflow run`: the venv first on PATH, a private store, offline."""
    env = dict(os.environ)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)  # set_experiment in this process exports the id; mlflow run refuses both
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["MLFLOW_EXPERIMENT_NAME"] = experiment
    env["HF_HUB_OFFLINE"] = "1"
    return env


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
    proc = subprocess.run(cmd, cwd=tmp_path, env=mlflow_env(tmp_path, "e2e"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlflow ui --backend-store-uri" in proc.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["e2e"], output_format="list")
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
