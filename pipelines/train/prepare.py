"""Step 1 of a fine-tune: resolve the model, device, data, split and examples before any run exists."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import ConfigError, FinetuneConfig
from pipelines.data.examples import TaskExamples, build_examples
from pipelines.data.sources import load_data
from pipelines.data.split import carve_validation, manifest, split_bundle
from pipelines.models import ResolvedModel, resolve_device, resolve_model, resolve_precision
from pipelines.train import distributed

# Called after each checkpoint evaluation with (fine-tune run id, epoch, metrics); returning True
# stops training after this epoch (the sweep's pruner does this), and the run is tagged `stopped_early`.
CheckpointHook = Callable[[str, int, dict[str, float]], bool | None]



@dataclass
class FinetuneResult:
    """What a finished fine-tune produced."""

    run_id: str
    checkpoint_runs: dict[int, str] = field(default_factory=dict)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    output_dir: Path | None = None
    stopped_early_at: int = 0
    resumed_from_epoch: float | None = None  # None: a new run
    trained: bool = False  # every epoch trained (even if the store has not received all of it)


@dataclass
class Prepared:
    """Everything resolved and loaded before any MLflow run exists."""

    config: FinetuneConfig
    model_ref: ResolvedModel
    device: str
    precision: str
    examples: TaskExamples
    manifest: dict
    bundle: object
    splits: dict


def prepare(config: FinetuneConfig) -> Prepared:
    """Resolve model, device, data, split and examples; every bad input fails here, before a run."""
    model_ref = resolve_model(config.model)
    _check_processes(config)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    bundle = load_data(config.data)
    splits = split_bundle(bundle, config.split_seed)
    used = carve_validation(splits) if config.eval_split == "validation" else splits
    examples = build_examples(
        bundle, used, config.tasks, train_limit=config.train_limits(), eval_limit=config.eval_limit,
        poison_rate=config.poison_rate, seed=config.seed, series_noise=config.series_noise,
        series_fill=config.series_fill, series_noise_only=config.series_noise_only,
    )
    return Prepared(config, model_ref, device, precision, examples,
                    manifest(bundle, splits, config.split_seed), bundle, splits)


def _check_processes(config: FinetuneConfig) -> None:
    """Raise ConfigError unless the effective batch splits over the processes (distributed.per_device_batch)."""
    world = distributed.world()
    if world.size > 1 and config.processes not in (1, world.size):
        raise ConfigError(f"--processes {config.processes}, but the launcher started {world.size} processes; "
                          "drop --processes under torchrun / accelerate launch")
    distributed.per_device_batch(config.batch_size, config.grad_accum, max(world.size, config.processes))

def default_run_name(config: FinetuneConfig) -> str:
    """e.g. 'smollm2-135m-multitask' or 'opt-350m-labeling-poison0.25'."""
    model = Path(config.model).name if "/" in config.model else config.model
    tasks = "multitask" if len(config.tasks) > 1 else config.tasks[0]
    poison = f"-poison{config.poison_rate:g}" if config.poison_rate else ""
    return config.run_name or f"{model}-{tasks}{poison}"
