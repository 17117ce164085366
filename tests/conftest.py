"""Shared fixtures: a tiny Llama built from a config (real transformers/peft code paths, no
download) and a temporary MLflow tracking store per test."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per test worker (and per process it starts): with -n 2 on 2 cores, two
    # threads each oversubscribe the CPU and small-model generation gets several times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

TINY_MODEL_VERSION = "tiny-llama-v1"


def build_tiny_model(target: Path) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer (read from the embedded GGUF), saved to `target`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipelines.models import SMOLLM2_GGUF, _embedded_gguf_dir

    if (target / ".complete").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(_embedded_gguf_dir(), gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    import torch

    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / ".complete").write_text(TINY_MODEL_VERSION)
    try:
        staging.rename(target)
    except OSError:  # another test worker finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(autouse=True)
def _no_inherited_mlflow_run(monkeypatch):
    """mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; never let one test's leak into the next."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Folder of the tiny test model, built once per machine and cached."""
    from pipelines.models import cache_root

    return build_tiny_model(cache_root() / TINY_MODEL_VERSION)


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store in tmp_path, set through MLFLOW_TRACKING_URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its schema, built once: migrations take seconds each time."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow-template")
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    mlflow.MlflowClient().search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def store(migrated_db, tracking_store, tmp_path) -> str:
    """conftest's tracking_store, starting from a copy of the migrated empty database."""
    shutil.copy(migrated_db, tmp_path / "mlflow.db")
    return tracking_store


@pytest.fixture
def chat_server():
    """Start local chat-completions servers (tests/chat_server.py) with a script each; closed after."""
    from chat_server import ChatServer

    servers: list[ChatServer] = []

    def start(script) -> ChatServer:
        servers.append(ChatServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
