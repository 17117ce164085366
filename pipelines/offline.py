"""Offline by default: the environment that keeps Hugging Face and MLflow from calling home.

Importing `pipelines` applies these defaults (and every entry point's `setup_logging` again), so a
fine-tune, evaluation or sweep started from the command line, MLflow Projects, a study or a test
opens no connection besides the tracking store, an Optuna storage and a baseline endpoint the
user named. Each variable is set only when unset: ``HF_HUB_OFFLINE=0`` in the environment lets a
model be downloaded from the Hugging Face Hub on purpose. docs/security.md lists what each one
stops.
"""

from __future__ import annotations

import os

OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # no Hub downloads, metadata or "is there a newer file?" requests
    "TRANSFORMERS_OFFLINE": "1",  # the same switch under its older transformers name
    "HF_DATASETS_OFFLINE": "1",  # and for the datasets library, should anything import it
    "HF_HUB_DISABLE_TELEMETRY": "1",  # no usage pings from huggingface_hub
    # MLflow 3 fetches https://config.mlflow-telemetry.io/<version>.json at the first tracked call
    # and then posts usage records; off, nothing leaves the machine.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def apply_offline_defaults() -> dict[str, str]:
    """Set each OFFLINE_ENV variable that is not set yet; returns the ones this call set."""
    applied = {}
    for name, value in OFFLINE_ENV.items():
        if name not in os.environ:
            os.environ[name] = applied[name] = value
    return applied
