"""The model card (README.md) of every saved adapter, and a base-model reference without machine paths.

PEFT writes an empty card template and records the base model as the folder it was loaded from
(for a preset, a path in this machine's cache). `finish_adapter` replaces both: the card says what
the adapter is for, what it was trained on (with the data fingerprint), how it scored at this
checkpoint and where it falls short; `base_model_name_or_path` becomes the Hugging Face id, which
pipelines.models.preset_of turns back into the preset when the adapter is loaded.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipelines.infer.evaluation import HEADLINE
from pipelines.models import hub_id
from pipelines.tasks import get_task

CARD = "README.md"
ADAPTER_CONFIG = "adapter_config.json"
_PATH = re.compile(r"(?<![\w.])[/~][^\s?&;,]*")  # an absolute or home-relative path in a data spec


@dataclass(frozen=True)
class CardFacts:
    """What the card states about one checkpoint of a fine-tune."""

    model: str  # the --model given: a preset name, a Hugging Face id or a local folder
    tasks: tuple[str, ...]
    data: str
    fingerprint: str
    epoch: int
    epochs: int
    run_id: str
    training: dict[str, str]  # learning rate, LoRA settings, batch, seed, decoding ...
    train_counts: dict[str, int]
    test_counts: dict[str, int]
    metrics: dict[str, float]
    poison_rate: float = 0.0


def base_model_label(model: str) -> tuple[str, str]:
    """(how the card names the base model, the id written to adapter_config.json): never a path."""
    hub = hub_id(model)
    if not hub:
        name = Path(model).expanduser().name
        return f"a local model folder named `{name}` (no preset, no Hugging Face id)", name
    if hub == model:
        return f"Hugging Face `{hub}`", hub
    return f"preset `{model}` = Hugging Face `{hub}`", hub


def without_paths(text: str) -> str:
    """A data spec with every file path reduced to its file name."""
    return _PATH.sub(lambda m: Path(m.group().rstrip("/\\")).name or m.group(), text)


def render_card(facts: CardFacts) -> str:
    """The card's Markdown (with the metadata header the Hugging Face hub reads)."""
    label, base = base_model_label(facts.model)
    tasks = ", ".join(facts.tasks)
    headline = ", ".join(f"{t} {get_task(t).headline_metric}" for t in facts.tasks)
    metric_rows = [f"| {HEADLINE} | {facts.metrics[HEADLINE]:.4f} |"] if HEADLINE in facts.metrics else []
    metric_rows += [f"| {k} | {v:.4f} |" for k, v in sorted(facts.metrics.items())
                    if k.count("/") == 1 and not k.startswith(("perf/", "train/"))]
    poison = (f"\n- {facts.poison_rate:.0%} of the labeling training examples were deliberately poisoned "
              "(labels flipped) for the robustness ablation: do not use this adapter for anything else."
              if facts.poison_rate else "")
    return "\n".join([
        "---",
        "library_name: peft",
        f"base_model: {base}",
        "tags: [lora, radiology, clinical-slm-lab]",
        "---",
        f"# LoRA adapter for radiology tasks ({tasks}), epoch {facts.epoch} of {facts.epochs}",
        "",
        "## Base model",
        f"{label}. Load the adapter onto it with `python -m pipelines.evaluate --adapter <this folder>` "
        "or `python -m pipelines.harmonize`.",
        "",
        "## Intended use",
        "Research on small language models for radiology report labeling (14 CheXpert-style findings), "
        "MRI series-description harmonization and impression generation. Not a medical device: its "
        "outputs must not inform the care of any patient.",
        "",
        "## Training data",
        f"- data: `{without_paths(facts.data)}`; fingerprint `{facts.fingerprint}` (content hash of the "
        "records and the frozen split; the MLflow run's `data_fingerprint` param)",
        "- training examples per task: " + ", ".join(f"{t} {n}" for t, n in facts.train_counts.items()),
        "- training settings: " + ", ".join(f"{k} {v}" for k, v in facts.training.items()),
        f"- MLflow fine-tune run `{facts.run_id}`",
        "",
        f"## Metrics at epoch {facts.epoch} (test split)",
        "n per task: " + ", ".join(f"{t} {n}" for t, n in facts.test_counts.items())
        + f"; `{HEADLINE}` is the mean of {headline} (docs/metrics.md).",
        "",
        "| metric | value |",
        "|---|---|",
        *metric_rows,
        "",
        "## Limitations",
        "- Scored on a small test split (n above): differences of a few points are within noise; see the "
        "report's intervals and paired tests before comparing adapters.",
        "- `data: synthetic` means generated reports and series descriptions, not real patients: the "
        "scores say nothing about real-world accuracy until it is evaluated on real data.",
        "- English chest radiograph reports and MRI series descriptions only; the labels follow one "
        "labeler's conventions, and impressions are scored by word overlap (ROUGE/BLEU), not by "
        "clinical correctness." + poison,
        "",
    ])


def finish_adapter(folder: Path, facts: CardFacts) -> None:
    """Write the model card into the adapter folder and name the base model without a machine path."""
    (folder / CARD).write_text(render_card(facts), encoding="utf-8")
    config_path = folder / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model_label(facts.model)[1] if hub_id(facts.model) else facts.model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
