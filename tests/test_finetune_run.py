"""A real LoRA fine-tune of the tiny model, and the MLflow run layout analysis relies on."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from pipelines.config import FinetuneConfig
from pipelines.train.recipe import train
from pipelines.vocabulary import LABEL_KEYS

DATA = "synthetic?reports=40&series=40&seed=1"
ISSUE_PARAMS = ("model", "tasks", "data", "epochs", "checkpoint_epochs", "batch_size", "learning_rate",
                "lora_r", "poison_rate", "seed", "train_limit", "eval_limit")
SCHEMA_PARAMS = ("data_fingerprint", "split_seed", "grad_accum", "lora_alpha", "lora_dropout",
                 "lora_targets", "precision", "device")


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory):
    """One multi-task fine-tune, 2 epochs with checkpoints at 1 and 2, in its own store."""
    root = tmp_path_factory.mktemp("ft")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        config = FinetuneConfig(model=str(tiny_model_dir), data=DATA, epochs=2, checkpoint_epochs=(1, 2),
                                train_limit=4, eval_limit=2, batch_size=2, learning_rate=1e-3, study="layout",
                                max_new_tokens=24)
        result = train(config)
        yield result, root, mlflow.MlflowClient()


def test_parent_run_params_tags_and_status(finished_run):
    result, _, client = finished_run
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["role"] == "finetune" and run.data.tags["study"] == "layout"
    for name in ISSUE_PARAMS + SCHEMA_PARAMS:
        assert name in run.data.params, name
    assert run.data.params["checkpoint_epochs"] == "1,2"
    assert run.data.params["lora_targets"] == "q_proj,v_proj"


def test_metrics_by_epoch(finished_run):
    result, _, client = finished_run
    expected = ["train/loss", "labeling/f1_macro", "labeling/parse_fail_rate", "harmonization/accuracy",
                "impression/bleu", "impression/rouge1", "impression/rouge2", "impression/rougeL"]
    expected += [f"labeling/f1/{k}" for k in LABEL_KEYS]
    for name in expected:
        steps = sorted(m.step for m in client.get_metric_history(result.run_id, name))
        assert steps == [1, 2], name


def test_checkpoint_children_hold_adapter_and_predictions(finished_run):
    result, _, client = finished_run
    assert sorted(result.checkpoint_runs) == [1, 2]
    for epoch, run_id in result.checkpoint_runs.items():
        child = client.get_run(run_id)
        assert child.data.tags["role"] == "checkpoint"
        assert child.data.tags["mlflow.parentRunId"] == result.run_id
        assert child.data.params["epoch"] == str(epoch)
        assert child.data.params["model"] == client.get_run(result.run_id).data.params["model"]
        assert child.data.metrics["labeling/parse_fail_rate"] >= 0
        paths = {a.path for a in client.list_artifacts(run_id, "adapter")}
        assert "adapter/adapter_config.json" in paths and "adapter/adapter_model.safetensors" in paths
        for task in ("labeling", "harmonization", "impression"):
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{task}.jsonl")
            rows = [json.loads(line) for line in Path(local).read_text().splitlines()]
            assert len(rows) == 2
            for row in rows:
                assert row["id"].startswith(f"{task}/") and row["task"] == task
                assert {"reference", "output", "parsed", "parse_status", "scores", "input"} <= set(row)
                assert row["parse_status"] in ("ok", "partial", "failed")


def test_split_manifest_and_local_copies(finished_run):
    result, _, client = finished_run
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="data/split_manifest.json")
    manifest = json.loads(Path(local).read_text())
    reports = manifest["datasets"]["reports"]
    assert len(reports["test"]) == 8 and len(reports["train"]) == 32
    assert manifest["fingerprint"] == client.get_run(result.run_id).data.params["data_fingerprint"]
    child = mlflow.artifacts.download_artifacts(
        run_id=result.checkpoint_runs[2], artifact_path="predictions/labeling.jsonl")
    test_ids = {json.loads(line)["id"].split("/", 1)[1] for line in Path(child).read_text().splitlines()}
    assert test_ids <= set(reports["test"])
    assert (result.output_dir / "epoch-2" / "adapter" / "adapter_config.json").is_file()


def test_same_test_ids_across_runs_and_poisoning(finished_run, tiny_model_dir):
    result, root, client = finished_run
    config = FinetuneConfig(model=str(tiny_model_dir), data=DATA, tasks="labeling", epochs=1,
                            checkpoint_epochs=(1,), train_limit=4, eval_limit=2, poison_rate=0.5, max_new_tokens=24,
                            study="layout", decoding="free", gradient_checkpointing=True, packing=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        other = train(config)

    def ids(run_id: str) -> list[str]:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/labeling.jsonl")
        return [json.loads(line)["id"] for line in Path(path).read_text().splitlines()]

    assert ids(other.checkpoint_runs[1]) == ids(result.checkpoint_runs[1])
    params = client.get_run(other.run_id).data.params
    assert params["poison_rate"] == "0.5" and params["poisoned_count"] == "2"
    assert params["decoding"] == "free" and params["gradient_checkpointing"] == "True"
    assert params["packing"] == "False"  # padded batches: the other collator, in a real fine-tune
    assert client.get_run(result.run_id).data.params["decoding"] == "constrained"
    assert client.get_run(result.run_id).data.params["packing"] == "True"
    # constrained decoding: every labeling and harmonization answer parses, even from a 2-layer model
    checkpoint = client.get_run(result.checkpoint_runs[1]).data.metrics
    assert checkpoint["labeling/parse_fail_rate"] == 0 and checkpoint["harmonization/parse_fail_rate"] == 0
    poisoned = mlflow.artifacts.download_artifacts(run_id=other.run_id, artifact_path="data/poisoned_ids.json")
    assert len(json.loads(Path(poisoned).read_text())) == 2


def test_evaluate_logged_adapter_and_zero_shot(finished_run, tiny_model_dir):
    from pipelines import evaluate

    result, root, client = finished_run
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        assert evaluate.main(["--adapter", result.run_id, "--epoch", "1", "--data", DATA, "--eval-limit", "2",
                              "--tasks", "harmonization", "--max-new-tokens", "16", "--study", "layout"]) == 0
        assert evaluate.main(["--model", str(tiny_model_dir), "--data", DATA, "--split", "all",
                              "--eval-limit", "3", "--tasks", "impression", "--max-new-tokens", "8"]) == 0
        assert evaluate.main(["--adapter", "no-such-run", "--data", DATA]) == 2
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.role = 'evaluation'")
    by_kind = {r.data.tags["evaluation"]: r for r in runs}
    adapter_run, zero_shot = by_kind["adapter"], by_kind["zero-shot"]
    assert adapter_run.data.params["source_run"] == result.checkpoint_runs[1]
    assert adapter_run.data.params["source_epoch"] == "1"

    def ids(run_id: str, task: str) -> list[str]:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"predictions/{task}.jsonl")
        return [json.loads(line)["id"] for line in Path(path).read_text().splitlines()]

    assert ids(adapter_run.info.run_id, "harmonization") == ids(result.checkpoint_runs[1], "harmonization")
    assert len(ids(zero_shot.info.run_id, "impression")) == 3
    assert "impression/rougeL" in zero_shot.data.metrics
    assert zero_shot.data.metrics["headline"] == zero_shot.data.metrics["impression/rougeL"]  # one task: its own
    table = mlflow.load_table("predictions/impression.json", run_ids=[zero_shot.info.run_id])
    assert list(table["id"]) == ids(zero_shot.info.run_id, "impression")
    # the logged config, passed back with --config, is the evaluation's config
    from pipelines.cli import load_config_file
    from pipelines.config import EvaluateConfig

    logged = mlflow.artifacts.download_artifacts(run_id=adapter_run.info.run_id, artifact_path="config/evaluate.yaml")
    assert EvaluateConfig(**load_config_file(logged, EvaluateConfig)) == EvaluateConfig(
        adapter=result.run_id, epoch=1, data=DATA, eval_limit=2, tasks="harmonization", max_new_tokens=16,
        study="layout")


def test_analyze_real_fine_tunes(finished_run, tiny_model_dir):
    """`analyze` over the two tiny fine-tunes above: tables and a role=analysis run."""
    from analysis import analyze

    result, root, client = finished_run
    out = root / "analysis-out"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        code = analyze.main(["--study", "layout", "--role", "checkpoint", "--param", "epoch=1",
                             "--reference", result.checkpoint_runs[1], "--output", str(out),
                             "--cache-dir", str(root / "cache")])
    assert code == 0
    files = {p.name for p in out.iterdir()}
    assert any(name.startswith("labeling") for name in files), files
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.role = 'analysis'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
