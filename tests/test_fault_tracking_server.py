"""A real `mlflow server` stopped in the middle of two fine-tunes, then started again (same port, same store).

One fine-tune keeps the platform's retry defaults and rides the outage out; the other is told to
give up fast, finishes training offline, exits 75 and prints the upload command, which is run
once the server is back. Both runs must then hold every metric point once and every checkpoint
run with its artifacts.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests
from fault_helpers import (
    Child,
    checkpoint_runs,
    child_env,
    finetune_command,
    finished_run_id,
    metric_history,
    run_child,
    saved_epochs,
    wait_until,
)

from pipelines import upload_outputs
from pipelines.runs.outputs import RunOutputs

EXPECTED_STEPS = {"train/loss": [1, 2, 3], "harmonization/accuracy": [2, 3], "harmonization/f1_macro": [2, 3],
                  "n_train/harmonization": [0], "model/trainable_params": [0], "perf/train_seconds": [0]}


class Server:
    """`mlflow server` on a SQLite backend, serving artifacts from a local folder."""

    def __init__(self, folder: Path, migrated_db: Path, port: int) -> None:
        import shutil

        self.folder, self.port = folder, port
        shutil.copy(migrated_db, folder / "server.db")
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{self.folder / 'server.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: starts faster
        log = (self.folder / f"server-{self.starts}.log").open("w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._healthy, 180, "the tracking server", every=0.3)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError((self.folder / f"server-{self.starts}.log").read_text()[-3000:])
        try:
            return requests.get(f"{self.uri}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with pytest.raises(requests.RequestException):
            requests.get(f"{self.uri}/health", timeout=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_complete(client: mlflow.MlflowClient, run_id: str, outputs: Path) -> None:
    """FINISHED; every journal point in the store exactly once; both checkpoint runs with their artifacts."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("faults").experiment_id  # not Default
    history = metric_history(client, run_id)
    for key, steps in EXPECTED_STEPS.items():
        assert [s for s, _ in history[key]] == steps, key
    for key, points in history.items():
        assert len({s for s, _ in points}) == len(points), key
    journal = RunOutputs(outputs / run_id).journal_points()
    # system/ metrics come from MLflow's own monitor, straight to the store (not journaled)
    logged = {(k, s): v for k, points in history.items() if not k.startswith("system/") for s, v in points}
    assert logged == pytest.approx(journal)
    children = {int(c.data.params["epoch"]): c for c in checkpoint_runs(client, run)}
    assert sorted(children) == [2, 3]
    for epoch, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.data.metrics["harmonization/accuracy"] == pytest.approx(
            json.loads((outputs / run_id / f"epoch-{epoch}" / "metrics.json").read_text())["harmonization/accuracy"])
        local = outputs / run_id / f"epoch-{epoch}"
        remote = mlflow.artifacts.download_artifacts(run_id=child.info.run_id, tracking_uri=client.tracking_uri,
                                                     artifact_path="predictions/harmonization.jsonl")
        assert Path(remote).read_text() == (local / "predictions" / "harmonization.jsonl").read_text()
        adapter = {a.path for a in client.list_artifacts(child.info.run_id, "adapter")}
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= adapter


def test_server_stopped_mid_finetune_then_restarted(tiny_model_dir, migrated_db, tmp_path, monkeypatch, capsys):
    server = Server(tmp_path, migrated_db, _free_port())
    server.start()
    children: list[Child] = []
    try:
        patient = Child.start(finetune_command(tiny_model_dir, "--output-dir", "out-patient"), tmp_path,
                              child_env(server.uri), "patient")
        hasty = Child.start(finetune_command(tiny_model_dir, "--output-dir", "out-hasty"), tmp_path,
                            child_env(server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
                                      MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5"),
                            "hasty")
        children += [patient, hasty]
        for child, out in ((patient, "out-patient"), (hasty, "out-hasty")):
            wait_until(lambda out=out: saved_epochs(tmp_path / out), 300, f"{out}: epoch 1 saved", child)

        # -- the server goes away while both are in epoch 2
        server.stop()
        down_at = time.monotonic()
        assert hasty.wait(300) == 75, hasty.stderr()[-3000:]
        last = hasty.stderr().strip().splitlines()[-1]
        match = re.search(r"upload them with: (python -m pipelines\.upload_outputs (\w+) --output-dir \S+)$", last)
        assert match and "nothing is lost" in last, last
        hasty_id = match.group(2)
        for epoch in (2, 3):  # trained and evaluated offline: all on local disk
            folder = tmp_path / "out-hasty" / hasty_id / f"epoch-{epoch}"
            assert (folder / "adapter" / "adapter_model.safetensors").is_file()
            assert (folder / "predictions" / "harmonization.jsonl").is_file()
        assert patient.proc.poll() is None  # still retrying

        # -- back on the same port with the same store
        server.start()
        assert patient.wait(600) == 0, patient.stderr()[-3000:]
        assert "Retrying" in patient.stderr()  # it did meet the outage (urllib3's retry warnings)
        assert time.monotonic() - down_at > 5
        upload = run_child([sys.executable, *match.group(1).split()[1:]], tmp_path, child_env(server.uri), "upload")
        assert upload.proc.returncode == 0, upload.stderr()[-3000:]
        assert "status FINISHED" in upload.stdout()

        client = mlflow.MlflowClient(server.uri)
        _assert_complete(client, finished_run_id(patient.stdout()), tmp_path / "out-patient")
        _assert_complete(client, hasty_id, tmp_path / "out-hasty")
        # uploading again changes nothing
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        assert upload_outputs.main([hasty_id, "--output-dir", str(tmp_path / "out-hasty")]) == 0
        assert "sent 0 metric point(s)" in capsys.readouterr().out
        _assert_complete(client, hasty_id, tmp_path / "out-hasty")
    finally:
        for child in children:
            child.stop()
        server.stop()
