"""A real `mlflow server` on loopback for a test: SQLite backend, proxied artifacts, always stopped.

The server runs in its own process group (the mlflow CLI starts uvicorn workers), so stopping it
stops all of them. Its output goes to <folder>/server.log, quoted when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

SERVER_START_S = 300  # importing mlflow in each uvicorn worker takes tens of seconds on a busy CPU
# Variables of the test process that would change what the server or its clients do.
_CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
                     "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(server: subprocess.Popen, url: str, log_path: Path, timeout_s: float,
                     interval_s: float = 1.0) -> None:
    """Poll `url` until it answers 200; fail quoting the log if the server exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.poll() is None, f"server exited early:\n{log_path.read_text()[-3000:]}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {timeout_s} s:\n{log_path.read_text()[-3000:]}"
        time.sleep(interval_s)


def server_command(folder: Path, port: int, app_name: str | None = None, workers: int = 1) -> list[str]:
    """`mlflow server` with a SQLite store and artifacts proxied from a folder, both in `folder`."""
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return command + (["--app-name", app_name] if app_name else [])


@contextmanager
def mlflow_server(
    folder: Path, app_name: str | None = None, env: Mapping[str, str] | None = None, workers: int = 1
) -> Iterator[str]:
    """Start the server, wait until /health answers, yield its URL; stop it on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k not in _CLIENT_VARIABLES}
    environment |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
        # The job runner (GenAI scorers) starts three more processes; nothing here uses it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(env or {}),
    }
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(server_command(folder, port, app_name, workers), cwd=folder, env=environment,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, f"{url}/health", log_path, SERVER_START_S, interval_s=0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
