"""Baselines: chat models scored without fine-tuning (zero-shot and prompt-engineered), through an
OpenAI-compatible endpoint or a local Hugging Face model, logged like fine-tunes (role=baseline)."""
from pipelines.baselines.config import PROMPTING_MODES, BaselineConfig
from pipelines.baselines.runner import BaselineResult, run_baseline

__all__ = ["PROMPTING_MODES", "BaselineConfig", "BaselineResult", "run_baseline"]
