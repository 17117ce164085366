"""The embedded SmolLM2-135M-Instruct: converted once, reloaded fast, and it learns."""
from __future__ import annotations

import time

import mlflow
import pytest

from pipelines.config import FinetuneConfig
from pipelines.models import load_model_and_tokenizer, resolve_model
from pipelines.train.recipe import train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("embedded")]


def test_embedded_model_resolves_offline_and_reloads_from_cache():
    ref = resolve_model("smollm2-135m")  # converts the GGUF on the first call only
    assert (ref.path / "model.safetensors").is_file() and ref.lora_targets == ("q_proj", "v_proj")
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(ref.path)
    assert time.perf_counter() - start < 30  # generous: the benchmark measures the real figure
    assert model.config.model_type == "llama" and tokenizer.eos_token == "<|im_end|>"


def test_embedded_fine_tune_loss_goes_down(tracking_store):
    config = FinetuneConfig(model="smollm2-135m", data="synthetic?reports=60&series=60", epochs=3,
                            checkpoint_epochs=(3,), train_limit=4, eval_limit=2, batch_size=4,
                            learning_rate=2e-3, study="embedded")
    result = train(config)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "train/loss")
    losses = {m.step: m.value for m in history}
    assert sorted(losses) == [1, 2, 3]
    assert losses[3] < losses[1] * 0.9, losses
    metrics = result.metrics[3]
    assert 0.0 <= metrics["labeling/parse_fail_rate"] <= 1.0
    assert "impression/rougeL" in metrics
