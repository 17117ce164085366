"""Bad input fails before training, with a clear message and no run left behind."""
from __future__ import annotations

import time

import mlflow
import pytest

from pipelines import finetune


def _runs(uri: str) -> list:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--tasks", "labeling,summarize"], "summarize"),
        (["--tasks", ""], "empty"),
        (["--model", "not-a-model"], "unknown model"),
        (["--poison-rate", "2"], "poison-rate"),
        (["--epochs", "3", "--checkpoint-epochs", "2,5"], "checkpoint-epochs"),
        (["--data", "nosuchsource"], "unknown data source"),
        (["--data", "synthetic?reports=abc"], "reports"),
        (["--device", "tpu"], "device"),
        (["--lora-targets", "q_proj,nope_proj"], "nope_proj: "),  # checked on the loaded model
    ],
)
def test_rejected_before_any_run(argv, message, tracking_store, tiny_model_dir, capsys):
    base = ["--model", str(tiny_model_dir), "--epochs", "1", "--checkpoint-epochs", "1"]
    assert finetune.main(base + argv) == 2
    assert message in capsys.readouterr().err
    assert _runs(tracking_store) == []


def test_unreachable_tracking_server_fails_fast(tiny_model_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    start = time.perf_counter()
    code = finetune.main(["--model", str(tiny_model_dir), "--epochs", "1", "--checkpoint-epochs", "1",
                          "--data", "synthetic?reports=20&series=20"])
    assert code == 2
    assert "not reachable" in capsys.readouterr().err
    assert time.perf_counter() - start < 60
