"""pipelines.infer.loading.load_for_inference: the one loader of evaluation, harmonize, serving and
the benchmarks, checked on the tiny test model with a random (non-zero) LoRA adapter."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.infer.loading import load_for_inference
from pipelines.models import load_model_and_tokenizer

TEXT = "### Instruction:\nHarmonize sequence name.\n\n### Input:\nAX T2 FLAIR\n\n### Response:\n"


def write_random_adapter(base_dir: Path, folder: Path, seed: int = 0) -> Path:
    """A LoRA adapter on q_proj and v_proj of the model in `base_dir`, both matrices random (a fresh
    adapter's B is zero and would change nothing), saved to `folder`."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_tokenizer(base_dir, "fp32", "cpu")
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return write_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("loading") / "adapter")


@torch.no_grad()
def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXT, return_tensors="pt")
    return model(**ids).logits.float()


def test_without_an_adapter_it_is_the_base_model_in_eval_mode(tiny_model_dir):
    from peft import PeftModel

    model, tokenizer = load_for_inference(str(tiny_model_dir), None, "fp32", "cpu")
    assert not isinstance(model, PeftModel) and model.training is False
    assert tokenizer.pad_token_id is not None
    base, base_tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    torch.testing.assert_close(logits(model, tokenizer), logits(base, base_tokenizer), rtol=0, atol=1e-6)


def test_with_an_adapter_it_equals_a_peft_model_built_by_hand(tiny_model_dir, random_adapter):
    from peft import PeftModel

    model, tokenizer = load_for_inference(str(tiny_model_dir), random_adapter, "fp32", "cpu")
    assert isinstance(model, PeftModel) and model.training is False
    base, base_tokenizer = load_model_and_tokenizer(tiny_model_dir, "fp32", "cpu")
    base_logits = logits(base, base_tokenizer)
    by_hand = PeftModel.from_pretrained(base, random_adapter).eval()
    adapted = logits(model, tokenizer)
    assert (adapted - base_logits).abs().max() > 1e-3  # the adapter is applied
    torch.testing.assert_close(adapted, logits(by_hand, base_tokenizer), rtol=0, atol=1e-6)

    # serving's form: the base model as a Path (a registered model's artifact folder), the adapter as a str
    served, served_tokenizer = load_for_inference(Path(tiny_model_dir), str(random_adapter), "auto", "cpu")
    torch.testing.assert_close(logits(served, served_tokenizer), adapted, rtol=0, atol=1e-6)


def test_merge_folds_the_adapter_into_plain_weights(tiny_model_dir, random_adapter):
    from peft import PeftModel

    merged, tokenizer = load_for_inference(str(tiny_model_dir), random_adapter, "fp32", "cpu", merge=True)
    adapted, _ = load_for_inference(str(tiny_model_dir), random_adapter, "fp32", "cpu")
    assert not isinstance(merged, PeftModel) and merged.training is False
    torch.testing.assert_close(logits(merged, tokenizer), logits(adapted, tokenizer), rtol=0, atol=1e-4)


def test_serving_loads_through_it(tiny_model_dir, random_adapter):
    from pipelines.serving.assistant_model import load_assistant

    model, tokenizer = load_assistant(Path(tiny_model_dir), random_adapter, device="cpu", precision="fp32")
    expected, _ = load_for_inference(str(tiny_model_dir), random_adapter, "fp32", "cpu")
    torch.testing.assert_close(logits(model, tokenizer), logits(expected, tokenizer), rtol=0, atol=1e-6)
