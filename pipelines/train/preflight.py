"""Checks before a fine-tune creates its MLflow run: LoRA targets that exist, an output folder
that is writable and roomy enough.

What a fine-tune writes under `<output_dir>/<run_id>/` (the base model is never written there):

    per checkpoint epoch   LoRA adapter (trainable params x 4 bytes, fp32) + tokenizer files
                           + predictions (~8 KB per test example: input, reference, output, scores)
    resumable state        adapter + AdamW's two moments (3 x adapter) + ~1 MB of scheduler, RNG
                           and trainer state; twice, as a new one is written before the old is removed

plus `disk_reserve_mb` of headroom (logs, the local MLflow artifact store, the rest of the system).
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
PREDICTION_BYTES = 8 * 1024
TRAINER_EXTRA_BYTES = MB
TOKENIZER_GLOBS = ("tokenizer*", "vocab*", "merges*", "special_tokens_map*", "added_tokens*", "chat_template*")


class OutputDirError(RuntimeError):
    """The output folder cannot hold the fine-tune's files; the message names it and what to do."""


@dataclass(frozen=True)
class SpaceEstimate:
    """Bytes a fine-tune will write, by part."""

    adapter: int
    tokenizer: int
    predictions: int
    checkpoints: int
    reserve: int

    @property
    def per_checkpoint(self) -> int:
        return self.adapter + self.tokenizer + self.predictions

    @property
    def resumable(self) -> int:
        return 2 * (3 * self.adapter + TRAINER_EXTRA_BYTES)

    @property
    def total(self) -> int:
        return self.checkpoints * self.per_checkpoint + self.resumable + self.reserve

    def describe(self) -> str:
        return (f"{self.checkpoints} checkpoint(s) of {_size(self.per_checkpoint)} (adapter {_size(self.adapter)}), "
                f"resumable state {_size(self.resumable)}, reserve {_size(self.reserve)} (--disk-reserve-mb)")


def _size(n: int) -> str:
    return f"{n / MB / 1024:.2f} GB" if n >= 1024 * MB else f"{n / MB:.1f} MB"


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_writable(output_dir: str | Path) -> Path:
    """Create the output folder if needed and write a file into it; OutputDirError if that fails."""
    folder = Path(output_dir).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        blocker = _existing_ancestor(folder)
        detail = f"{blocker} is not a folder" if blocker.is_file() else exc.strerror or str(exc)
        raise OutputDirError(f"output folder {folder} is not writable ({detail}); choose another with "
                             "--output-dir or fix its permissions") from None
    return folder


def _linear_layers(model) -> Iterator[tuple[str, Any]]:
    """(last part of the name, module) of each linear layer: what a LoRA target names."""
    for name, module in model.named_modules():
        if name and hasattr(module, "in_features"):
            yield name.rsplit(".", 1)[-1], module


def lora_parameter_count(model, targets: tuple[str, ...], r: int) -> int:
    """Trainable LoRA parameters: r x (in + out) for each linear layer named in `targets`."""
    return sum(r * (module.in_features + module.out_features)
               for name, module in _linear_layers(model) if name in targets)


def check_lora_targets(model, targets: tuple[str, ...], model_name: str) -> None:
    """ConfigError unless every LoRA target names a linear layer of `model` (last part of its name)."""
    from pipelines.config import ConfigError

    linear = sorted({name for name, _ in _linear_layers(model)})
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ConfigError(f"--lora-targets {','.join(missing)}: {model_name} has no linear layer of that name; "
                          f"its linear layers are {', '.join(linear)}")


def estimate(model, tokenizer_dir: Path, targets: tuple[str, ...], lora_r: int, checkpoints: int,
             test_examples: int, reserve_mb: int) -> SpaceEstimate:
    """What the fine-tune will write, from the base model's layers and the tokenizer's files."""
    tokenizer = sum(p.stat().st_size for pattern in TOKENIZER_GLOBS for p in Path(tokenizer_dir).glob(pattern)
                    if p.is_file())
    return SpaceEstimate(adapter=4 * lora_parameter_count(model, targets, lora_r), tokenizer=tokenizer,
                         predictions=PREDICTION_BYTES * test_examples, checkpoints=checkpoints,
                         reserve=reserve_mb * MB)


def check_free_space(output_dir: str | Path, need: SpaceEstimate) -> None:
    """OutputDirError when the output folder's file system has less free space than `need`."""
    folder = Path(output_dir).absolute()
    free = shutil.disk_usage(_existing_ancestor(folder)).free
    if free < need.total:
        raise OutputDirError(
            f"not enough free space for output folder {folder}: needs about {_size(need.total)} "
            f"({need.describe()}), {_size(free)} available; free some space, point --output-dir at a "
            "larger disk, or lower --disk-reserve-mb")

