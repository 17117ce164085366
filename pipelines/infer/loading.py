"""The one way a model is loaded for answering: base model, LoRA adapter on top, eval mode.

Evaluation, harmonize, serving and the benchmarks all call `load_for_inference`, so they answer
with the same weights in the same precision.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.models import load_model_and_tokenizer, resolve_device, resolve_model, resolve_precision


def base_model_folder(base_model: str | Path) -> Path:
    """The local folder of a base model: a Path as is (e.g. a registered model's artifact);
    a name (preset, model folder or cached Hugging Face id) through resolve_model."""
    if isinstance(base_model, Path):
        return base_model
    return resolve_model(base_model).path


def load_for_inference(base_model: str | Path, adapter: str | Path | None, precision: str = "auto",
                       device: str = "auto", *, merge: bool = False):
    """The base model with the LoRA adapter folder `adapter` applied (none: the base model alone),
    in eval mode, and its tokenizer.

    precision and device may be "auto" (resolved by pipelines.models). merge folds the adapter
    into the weights (a plain transformers model, slightly different numerics); off by default,
    so that answers are exactly the evaluated ones.
    """
    device = resolve_device(device)
    model, tokenizer = load_model_and_tokenizer(base_model_folder(base_model), resolve_precision(precision, device),
                                                device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, Path(adapter))
        if merge:
            model = model.merge_and_unload()
    model.eval()
    return model, tokenizer
