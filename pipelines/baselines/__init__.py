"""Baselines: chat models scored without fine-tuning (zero-shot and prompt-engineered), through an
OpenAI-compatible endpoint or a local Hugging Face model, logged like fine-tunes (role=baseline)."""
from pipelines.baselines.config import PROMPTING_MODES, BaselineConfig
from pipelines.baselines.runner import BaselineResult, run_baseline

# Registers the rule back ends (rules, majority) wherever the back-end registry is used.
from pipelines.baselines import rules  # noqa: E402,F401  isort: skip

__all__ = ["PROMPTING_MODES", "BaselineConfig", "BaselineResult", "run_baseline"]
