"""Producers of the clinical SLM lab: data, tasks, models, fine-tuning and evaluation."""
from pipelines.offline import apply_offline_defaults

apply_offline_defaults()  # before any submodule imports mlflow or transformers (docs/security.md)
