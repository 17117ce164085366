"""Register a tiny fine-tune, serve it with the real `mlflow models serve`, and ask it all three tasks.

One fine-tune, one registration and one server start for the whole module. Torch runs on one
thread here and in the server: with the test workers sharing 2 cores, more threads per process
make generation about 10x slower (threads wait on each other), not faster.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import torch
from mlflow_server import wait_until_ready
from xdist_once import build_once

from pipelines.config import FinetuneConfig
from pipelines.register import main as register_main
from pipelines.train.recipe import train

TASKS = ("labeling", "harmonization", "impression")
MALFORMED = [{"task": "radiology", "text": "FINDINGS: Clear lungs."}, {"task": "impression", "text": ""},
             {"task": "harmonization", "text": None}]
SERVER_START_S = 300  # loading mlflow, torch and the model can take minutes on a busy machine
REQUEST_TIMEOUT_S = 300  # the server's default, 60 s, is short for a batch on a busy CPU


@contextmanager
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def mixed_request(evaluated: dict[str, list[dict]]) -> list[dict]:
    """Every task's test inputs (the checkpoint's own), mixed with malformed rows."""
    records = [{"task": task, "text": p["input"]} for task in TASKS for p in evaluated[task]]
    return [*records[:2], MALFORMED[0], *records[2:4], MALFORMED[1], *records[4:], MALFORMED[2]]


def serve_and_ask(root: Path, uri: str, request: list[dict]) -> dict:
    """Start `mlflow models serve` on loopback, send the requests, and always stop the server."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log_path = root / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
             "models:/clinical-assistant@champion", "--env-manager", "local", "-p", str(port),
             "--host", "127.0.0.1", "--timeout", str(REQUEST_TIMEOUT_S)],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, f"{base}/ping", log_path, SERVER_START_S)
        answers = requests.post(f"{base}/invocations", json={"dataframe_records": request},
                                timeout=REQUEST_TIMEOUT_S)
        missing = requests.post(f"{base}/invocations", json={"dataframe_records": [{"task": "labeling"}]},
                                timeout=60)
        return {"answers": (answers.status_code, answers.text),
                "missing_text": (missing.status_code, missing.text)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the mlflow CLI and the uvicorn it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def build(root: Path, tiny_model_dir: Path) -> dict:
    """Fine-tune (one epoch, three tasks), register through the CLI, serve and ask."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        result = train(FinetuneConfig(model=str(tiny_model_dir), data="synthetic?reports=40&series=40",
                                      epochs=1, checkpoint_epochs=(1,), train_limit=4, eval_limit=2,
                                      batch_size=2))
        assert register_main([]) == 0
        checkpoint = result.checkpoint_runs[1]
        folder = Path(mlflow.artifacts.download_artifacts(run_id=checkpoint, artifact_path="predictions",
                                                          dst_path=str(root / "predictions")))
        evaluated = {task: [json.loads(line) for line in (folder / f"{task}.jsonl").read_text().splitlines()]
                     for task in TASKS}
        request = mixed_request(evaluated)
        return {"root": root, "uri": uri, "finetune": result.run_id, "checkpoint": checkpoint,
                "evaluated": evaluated, "request": request, **serve_and_ask(root, uri, request)}


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory) -> dict:
    return build_once(tmp_path_factory, "serving", lambda root: build(root, tiny_model_dir))


@pytest.fixture
def store(built, monkeypatch):
    """The built tracking store, for this test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built["uri"])
    mlflow.set_tracking_uri(built["uri"])
    return built


def test_registry_entry_links_the_checkpoint_run_and_its_metrics(store):
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("clinical-assistant", "champion")
    checkpoint = client.get_run(store["checkpoint"])
    assert version.run_id == store["checkpoint"]
    assert version.tags["finetune_run_id"] == store["finetune"]
    assert version.tags["checkpoint_epoch"] == "1" and version.tags["tasks"] == ",".join(TASKS)
    assert float(version.tags["labeling/f1_macro"]) == \
        pytest.approx(checkpoint.data.metrics["labeling/f1_macro"])
    assert store["finetune"] in version.description and "harmonization/accuracy" in version.description

    model = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    assert {m.key for m in model.metrics} >= {"labeling/f1_macro", "harmonization/accuracy",
                                              "impression/rougeL"}
    registration = client.get_run(model.source_run_id)
    assert registration.data.tags["role"] == "registration"
    assert registration.data.params["source_run_id"] == store["checkpoint"]


def test_logged_model_is_self_contained(store, tmp_path):
    version = mlflow.MlflowClient().get_model_version_by_alias("clinical-assistant", "champion")
    folder = Path(mlflow.artifacts.download_artifacts(version.source, dst_path=str(tmp_path)))
    assert (folder / "artifacts" / "base_model" / "model.safetensors").is_file()
    assert (folder / "artifacts" / "adapter" / "adapter_config.json").is_file()
    assert (folder / "code" / "pipelines" / "serving" / "assistant_model.py").is_file()
    requirements = (folder / "requirements.txt").read_text()
    assert "torchvision" not in requirements and "peft==" in requirements and "transformers==" in requirements
    example = json.loads((folder / "serving_input_example.json").read_text())
    assert {r["task"] for r in pd.DataFrame(**example["dataframe_split"]).to_dict("records")} == set(TASKS)


def test_served_answers_all_tasks_and_flags_malformed_rows(built):
    status, body = built["answers"]
    assert status == 200, body
    rows, request = json.loads(body)["predictions"], built["request"]
    assert len(rows) == len(request)
    for question, row in zip(request, rows, strict=True):
        assert set(row) == {"task", "output", "parse_status", "error", "raw_output"}
        if question in MALFORMED:
            assert row["error"] and row["parse_status"] == "failed" and row["output"] == ""
        else:
            assert row["task"] == question["task"] and row["error"] == ""
            assert row["parse_status"] in ("ok", "partial", "failed")
    errors = [r["error"] for r in rows if r["error"]]
    assert errors == ["unknown task 'radiology'; valid tasks: labeling, harmonization, impression",
                      "empty text: send the report as `text`",
                      "empty text: send the series description as `text`"]
    # Served answers are the checkpoint's evaluated answers: same prompts, batches and decoding.
    answered = [r for q, r in zip(request, rows, strict=True) if q not in MALFORMED]
    recorded = [p for task in TASKS for p in built["evaluated"][task]]
    assert [r["raw_output"] for r in answered] == [p["output"] for p in recorded]
    assert [r["parse_status"] for r in answered] == [p["parse_status"] for p in recorded]


def test_a_request_without_text_column_is_a_400_with_a_clear_message(built):
    status, body = built["missing_text"]
    assert status == 400
    assert "lacks column(s) ['text']" in json.loads(body)["message"]


def test_pyfunc_batch_inference_gives_the_served_answers_with_the_logged_adapter(store):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    model = mlflow.pyfunc.load_model("models:/clinical-assistant@champion")
    with one_torch_thread():
        frame = model.predict(pd.DataFrame(store["request"]))
    assert frame.to_dict("records") == json.loads(store["answers"][1])["predictions"]

    # The LoRA weights in use are the checkpoint's, trained (not the zero-initialized B).
    adapter = Path(mlflow.artifacts.download_artifacts(run_id=store["checkpoint"], artifact_path="adapter"))
    logged = load_file(adapter / "adapter_model.safetensors")
    in_use = get_peft_model_state_dict(model.unwrap_python_model().model)
    assert logged.keys() == in_use.keys()
    assert all(torch.equal(logged[k], in_use[k]) for k in logged)
    assert any(k.endswith("lora_B.weight") and logged[k].abs().sum() > 0 for k in logged)
