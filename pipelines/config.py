"""Typed configuration of a fine-tune, validated before anything is loaded or logged."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipelines.tasks import PAPER_TASKS, task_names, task_tuple

PAPER_CHECKPOINTS = (2, 5, 20, 100)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EVAL_SPLITS = ("test", "validation")
# free: greedy generation of the whole answer (the paper's setting); constrained: the fixed
# parts of structured answers are forced and only the label values / class are decided.
DECODINGS = ("constrained", "free")


class ConfigError(ValueError):
    """An invalid option; the message names the option and what to change."""


def parse_int_list(text: str | list[int] | tuple[int, ...], option: str) -> tuple[int, ...]:
    """'2,5,20' -> (2, 5, 20), sorted and de-duplicated; errors name the option."""
    if isinstance(text, (list, tuple)):
        values = list(text)
    else:
        try:
            values = [int(p) for p in str(text).split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"--{option} must be comma-separated integers, got {text!r}") from None
    return tuple(sorted(set(values)))


def flat_params(config: object) -> dict[str, str]:
    """A config dataclass as flat string params for MLflow (tuples comma-joined, dicts left out)."""
    out: dict[str, str] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, dict):
            continue
        out[f.name] = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    return out


def config_document(config: object) -> dict[str, Any]:
    """A config dataclass as plain values (tuples as lists): what a run logs as config/<entry>.yaml,
    and what `--config` reads back to repeat the run."""
    return json.loads(json.dumps(asdict(config)))


def check_finite_and_named(config: object) -> None:
    """Raise ConfigError for a float option that is inf or nan (they pass every range check) or an
    empty --experiment (MLflow refuses it only after the run's inputs are loaded); a malformed --data
    spec raises its ValueError here, so no entry point (a sweep's trials included) starts on one."""
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    if not str(getattr(config, "experiment", "x")).strip():
        raise ConfigError("--experiment is empty; name an MLflow experiment, e.g. clinical-slm")
    if hasattr(config, "data"):
        from pipelines.data.sources import parse_data_spec  # deferred: imports the source modules

        parse_data_spec(config.data)  # kinds, paths and option names; files are read later


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}


def parse_bool(value: object, option: str) -> bool:
    """A bool as is; true/false (also yes/no, on/off, 1/0; any case) as one; else ConfigError naming `option`."""
    if isinstance(value, bool):
        return value
    parsed = BOOLEAN_WORDS.get(str(value).strip().lower())
    if parsed is None:
        raise ConfigError(f"--{option} must be true or false, got {value!r}")
    return parsed


def parse_task_limits(text: str, option: str = "task-train-limits") -> dict[str, int]:
    """'labeling=320,impression=120' -> {"labeling": 320, "impression": 120}; names must be tasks,
    counts >= 0 (0 = all); errors name the option and the bad entry."""
    limits: dict[str, int] = {}
    for entry in (p.strip() for p in str(text).split(",")):
        if not entry:
            continue
        name, sep, count = entry.partition("=")
        name = name.strip()
        if not sep or name not in task_names():
            raise ConfigError(f"--{option}: expected task=count with task one of {task_names()}, got {entry!r}")
        try:
            limits[name] = int(count)
        except ValueError:
            raise ConfigError(f"--{option}: {name}'s count must be an integer, got {count.strip()!r}") from None
        if limits[name] < 0:
            raise ConfigError(f"--{option}: {name}'s count must be >= 0 (0 = all), got {limits[name]}")
    return limits


def check_decoding(decoding: str) -> None:
    """Raise ConfigError unless `decoding` is one of DECODINGS."""
    if decoding not in DECODINGS:
        raise ConfigError(f"--decoding must be one of {DECODINGS}, got {decoding!r}")


@dataclass
class RunSettings:
    """Where an entry point computes and where its MLflow run goes: the fields every config shares
    (FinetuneConfig, EvaluateConfig, HarmonizeConfig, baselines' BaselineConfig)."""

    device: str = "auto"
    precision: str = "auto"
    study: str = "default"
    experiment: str = "clinical-slm"
    run_name: str = ""

    def check_run_settings(self) -> None:
        """Raise ConfigError for an unknown precision, an infinite number or an empty experiment."""
        check_finite_and_named(self)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class FinetuneConfig(RunSettings):
    """Everything that defines a fine-tune. Defaults are the paper's (100 epochs, batch 4, lr 8e-4).

    effective batch = batch_size x grad_accum examples per optimizer step.
    train_limit / eval_limit cap the examples per task (0 = all of the split).
    """

    model: str = "smollm2-135m"
    tasks: tuple[str, ...] = PAPER_TASKS
    data: str = "synthetic"
    epochs: int = 100
    checkpoint_epochs: tuple[int, ...] = PAPER_CHECKPOINTS
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 8e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ()  # empty: the model preset's targets
    poison_rate: float = 0.0
    seed: int = 42
    split_seed: int = 0
    train_limit: int = 0
    task_train_limits: str = ""  # "labeling=320,impression=120": per-task caps that replace train_limit
    eval_limit: int = 0
    eval_split: str = "test"  # "validation": score on a slice of the train split (sweeps)
    max_new_tokens: int = 0  # cap on each task's generation budget; 0 = the task's own
    decoding: str = "constrained"  # or "free" (see DECODINGS)
    max_seq_length: int = 768
    eval_batch_size: int = 16
    packing: bool = True  # examples of a batch end to end in one row, no padding (see pipelines/train/packing.py)
    value_weight: float = field(default=1.0, metadata={
        "help": "loss weight of the answer's slot-value tokens (labeling's 14 Yes/No) against its other tokens; "
                "1 = the paper's plain response-only loss (pipelines/train/value_weighting.py)"})
    value_balance: float = field(default=0.0, metadata={
        "help": "class-balanced slot-value weights: a value n times in the training answers, in a slot whose "
                "most common value is there m times, weighs (m/n)**p more; 0 = off (the paper's loss), "
                "0.5 = square-root inverse frequency (pipelines/train/value_weighting.py)"})
    choice_weight: float = field(default=1.0, metadata={
        "help": "loss weight of the tokens that tell a scored answer from the task's other candidates "
                "(harmonization's class name) against its other tokens (the description it repeats); "
                "1 = the paper's plain response-only loss (pipelines/train/value_weighting.py)"})
    series_noise: int = field(default=0, metadata={
        "help": "site-noise copies of each training series description (a series number, a study tag, a "
                "recased word; pipelines/data/series_noise.py); 0 = off, the paper's data"})
    series_noise_only: bool = field(default=False, metadata={
        "help": "train on the --series-noise copies in place of the series descriptions as written (the series "
                "then cost what they cost without copies); off = the copies are added"})
    series_fill: int = field(default=0, metadata={
        "help": "generator descriptions added for each generator base name that fewer than k training series "
                "contain, up to k (pipelines/data/series_fill.py); 0 = off, the paper's data"})
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (4-7B presets)
    processes: int = 1  # >1: one fine-tune across N processes, started with torchrun (docs/multi_process.md)
    system_metrics: bool = field(default=True, metadata={
        "help": "log CPU, memory, disk and GPU use to the run's System metrics tab"})
    output_dir: str = "outputs"
    disk_reserve_mb: int = 512  # free space to leave on the output disk beyond what the run writes
    extra_tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = task_tuple(self.tasks)
        self.checkpoint_epochs = parse_int_list(self.checkpoint_epochs, "checkpoint-epochs")
        if isinstance(self.lora_targets, str):
            self.lora_targets = tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())
        self.task_train_limits = ",".join(f"{k}={v}" for k, v in parse_task_limits(self.task_train_limits).items())
        self._validate()

    def _validate(self) -> None:
        self.check_run_settings()
        positive = ("epochs", "batch_size", "grad_accum", "lora_r", "lora_alpha", "max_seq_length",
                    "eval_batch_size", "processes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.disk_reserve_mb < 0:
            raise ConfigError(f"--disk-reserve-mb must be >= 0, got {self.disk_reserve_mb}")
        for name in ("train_limit", "eval_limit", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (0 = all), got {getattr(self, name)}")
        for name in ("series_noise", "series_fill"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.series_noise_only and not self.series_noise:
            raise ConfigError("--series-noise-only needs --series-noise >= 1 (the copies to train on)")
        if not 0.0 <= self.poison_rate <= 1.0:
            raise ConfigError(f"--poison-rate must be within [0, 1], got {self.poison_rate}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout must be within [0, 1), got {self.lora_dropout}")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not self.value_weight > 0:
            raise ConfigError(f"--value-weight must be > 0 (1 = unweighted), got {self.value_weight}")
        if not self.choice_weight > 0:
            raise ConfigError(f"--choice-weight must be > 0 (1 = unweighted), got {self.choice_weight}")
        if not 0.0 <= self.value_balance <= 1.0:
            raise ConfigError(f"--value-balance must be within [0, 1] (0 = off), got {self.value_balance}")
        if not self.checkpoint_epochs:
            raise ConfigError("--checkpoint-epochs is empty; give at least one epoch, e.g. 2,5")
        if self.checkpoint_epochs[0] < 1 or self.checkpoint_epochs[-1] > self.epochs:
            raise ConfigError(
                f"--checkpoint-epochs {','.join(map(str, self.checkpoint_epochs))} must lie within "
                f"1..{self.epochs} (--epochs); raise --epochs or drop the larger checkpoints"
            )
        if self.eval_split not in EVAL_SPLITS:
            raise ConfigError(f"--eval-split must be one of {EVAL_SPLITS}, got {self.eval_split!r}")
        check_decoding(self.decoding)
        if self.poison_rate > 0 and "labeling" not in self.tasks:
            raise ConfigError("--poison-rate poisons the labeling task; add labeling to --tasks")

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return flat_params(self)

    def to_dict(self) -> dict:
        """JSON-able form (the resolved config artifact)."""
        return config_document(self)

    @property
    def weights_tokens(self) -> bool:
        """Whether the loss weighs tokens unequally (--value-weight, --value-balance or --choice-weight)."""
        return self.value_weight != 1.0 or self.value_balance != 0.0 or self.choice_weight != 1.0

    def train_limits(self) -> dict[str, int]:
        """Training examples per task: task_train_limits where given, else train_limit (0 = all)."""
        per_task = parse_task_limits(self.task_train_limits)
        return {name: per_task.get(name, self.train_limit) for name in self.tasks}


# Small enough for 2 CPU cores in a few minutes: the MLproject's no-option run.
DEMO_PRESET: dict[str, object] = {
    "epochs": 5,
    "checkpoint_epochs": (2, 5),
    "batch_size": 2,
    "learning_rate": 2e-3,
    "lora_r": 8,
    "train_limit": 24,
    "eval_limit": 8,
}


@dataclass(frozen=True)
class CpuCost:
    """What one task costs on 2 cores, measured in the all-task cpu preset run on the default
    synthetic data (benchmarks/results/cpu-preset.json)."""

    tokens_per_example: float  # training tokens of one example (prompt and answer)
    score_seconds: float  # scoring its whole test split at the end


CPU_COSTS: dict[str, CpuCost] = {
    "labeling": CpuCost(tokens_per_example=239, score_seconds=366),  # 732 test reports, ~2/s
    "harmonization": CpuCost(tokens_per_example=50, score_seconds=31),  # 279 descriptions, ~9/s
    "impression": CpuCost(tokens_per_example=114, score_seconds=222),  # 732 reports, ~3.3/s
}
CPU_SERIES = 1116  # every synthetic training series is used: they are short
CPU_REPORT_SHARES = {"labeling": 320, "impression": 120}  # reports kept in this proportion
CPU_EPOCHS = 2


# Training tokens/s of the preset on 2 cores, per precision (bf16: a CPU with bf16 units; its
# scoring is taken to cost what fp32's does, an upper bound on the runs measured).
CPU_TRAIN_TOKENS_PER_SECOND: dict[str, float] = {"fp32": 208, "bf16": 228}
CPU_OVERHEAD_SECONDS = 10  # loading, data, logging: the measured run's wall time less training and scoring
# The wall time a cpu preset run is sized to: 39 minutes, 6 (13%) under the 45-minute limit
# on 2 cores, as a margin for machines slower than the one measured (docs/cpu_preset.md).
CPU_WALL_SECONDS = 2340
CPU_LIMIT_SECONDS = 2700  # the 45-minute limit itself: beyond it the preset warns (cpu_preset)
# Below these reports per epoch the preset warns that a task has too few to learn from: at 0.7x on
# validation, 10 labeling reports gave macro F1 0.00 and 150 gave 0.70-0.79 (docs/cpu_preset.md).
CPU_MIN_REPORTS = {"labeling": 150, "impression": 50}


def _cpu_series_tokens(tasks: tuple[str, ...], series_noise: int, series_fill: int,
                       noise_only: bool = False) -> float:
    """Training tokens of one epoch of the preset's series (with the fill and the noise copies,
    added to the series or, `noise_only`, in their place)."""
    if "harmonization" not in tasks:
        return 0.0
    from pipelines.data.series_fill import default_fill_count

    series = CPU_SERIES + (default_fill_count(series_fill) if series_fill else 0)
    copies = series_noise if noise_only and series_noise else 1 + series_noise
    return series * copies * CPU_COSTS["harmonization"].tokens_per_example


def _cpu_rate(precision: str, speed: float) -> float:
    """Training tokens/s in `precision` ("auto" on a CPU: fp32) on a CPU `speed` times the measured one."""
    return CPU_TRAIN_TOKENS_PER_SECOND.get(precision, CPU_TRAIN_TOKENS_PER_SECOND["fp32"]) * speed


def _cpu_scoring_seconds(tasks: tuple[str, ...], speed: float) -> float:
    """Seconds to score the tasks' whole test splits on a CPU `speed` times the measured one."""
    return sum(CPU_COSTS[t].score_seconds for t in tasks if t in CPU_COSTS) / speed


def cpu_expected_seconds(tasks: tuple[str, ...], limits: str, precision: str = "fp32", series_noise: int = 0,
                         series_fill: int = 0, speed: float = 1.0, noise_only: bool = False) -> float:
    """The wall time the preset's costs predict for these tasks and report `limits` on a CPU
    `speed` times as fast as the one they were measured on."""
    tokens = _cpu_series_tokens(tasks, series_noise, series_fill, noise_only) + sum(
        n * CPU_COSTS[t].tokens_per_example for t, n in parse_task_limits(limits).items())
    return (CPU_OVERHEAD_SECONDS + _cpu_scoring_seconds(tasks, speed)
            + CPU_EPOCHS * tokens / _cpu_rate(precision, speed))


def cpu_train_limits(tasks: tuple[str, ...], precision: str = "fp32", series_noise: int = 0,
                     series_fill: int = 0, speed: float = 1.0, noise_only: bool = False) -> str:
    """The cpu preset's `task_train_limits` for a set of tasks: what fits in CPU_WALL_SECONDS.

    The seconds left after scoring the tasks' test splits train 2 epochs at the rate measured in
    `precision` (CPU_TRAIN_TOKENS_PER_SECOND); every series is used, and the rest of the tokens
    go to the report tasks in the proportion of CPU_REPORT_SHARES, so a subset spends a dropped
    task's minutes on more reports of the tasks kept; the `series_fill` series (as many as the
    default split needs) and `series_noise` copies of every series (in their place, `noise_only`)
    are paid for in reports too.
    On a CPU `speed` times as fast as the measured one (pipelines/train/cpu_speed.py) training
    and scoring take 1/speed as long, so fewer reports fit; the series are kept whole. A task
    without a measured cost (one you registered) keeps no limit. Reports are rounded down to tens,
    and are at least 10.
    """
    kept = [name for name in CPU_REPORT_SHARES if name in tasks]
    if not kept:
        return ""
    seconds = CPU_WALL_SECONDS - CPU_OVERHEAD_SECONDS - _cpu_scoring_seconds(tasks, speed)
    tokens = seconds * _cpu_rate(precision, speed) / CPU_EPOCHS
    tokens -= _cpu_series_tokens(tasks, series_noise, series_fill, noise_only)
    share_tokens = sum(CPU_REPORT_SHARES[t] * CPU_COSTS[t].tokens_per_example for t in kept)
    scale = max(tokens, 0) / share_tokens
    # at least 10 reports each: a limit of 0 would mean every report
    return ",".join(f"{name}={max(10, int(CPU_REPORT_SHARES[name] * scale) // 10 * 10)}" for name in kept)


# The best recipe found for 2 CPU cores (issue #14; docs/cpu_preset.md has the evidence): the slot
# values of the labeling answer weighted 5x and balanced by their square-root inverse frequency,
# every training series twice (as written and with site noise), scored once at the end on the
# whole test split; cpu_preset adds the precision and the report limits (as many reports as fit).
CPU_PRESET: dict[str, object] = {
    "epochs": CPU_EPOCHS,
    "checkpoint_epochs": (CPU_EPOCHS,),
    "batch_size": 4,
    "learning_rate": 2e-3,
    "lora_r": 8,
    "train_limit": 0,
    "eval_limit": 0,
    "value_weight": 5.0,
    "value_balance": 0.5,
    "series_noise": 1,
    "series_noise_only": False,
    "series_fill": 1,
}


def cpu_preset(tasks: tuple[str, ...] | str = PAPER_TASKS, precision: str = "", device: str = "auto",
               series_noise: int | None = None, series_fill: int | None = None,
               measure_speed: bool = True, series_noise_only: bool | None = None) -> dict[str, object]:
    """The cpu preset for these tasks, the precision asked for ("": none), the device and the series
    noise, noise-only and fill asked for (None: the preset's). Asked for no precision, it trains in bf16 on a CPU with
    bf16 units (docs/cpu_preset.md: as good as fp32 on the validation split, and faster) and
    spends the time saved on more reports (cpu_train_limits). On a CPU (and with `measure_speed`) it
    times a few training steps first and, on a CPU slower than the measured one, trains on fewer
    reports (the speed, at most 1, is the run's `cpu_speed` tag); where even the series take longer
    than the 45-minute limit, or the reports fall below CPU_MIN_REPORTS, it says so."""
    from pipelines.models import cpu_bf16_units, resolve_device
    from pipelines.train import cpu_speed

    on_cpu = resolve_device(device) == "cpu"
    if not precision:
        precision = "bf16" if on_cpu and cpu_bf16_units() else "auto"
    noise = int(CPU_PRESET["series_noise"]) if series_noise is None else series_noise
    only = bool(series_noise_only)
    fill = int(CPU_PRESET["series_fill"]) if series_fill is None else series_fill
    chosen = task_tuple(tasks)
    speed = min(1.0, cpu_speed.relative_speed(precision)) if on_cpu and measure_speed else 1.0
    log = logging.getLogger(__name__)
    limits = cpu_train_limits(chosen, precision, noise, fill, speed, only)
    expected = cpu_expected_seconds(chosen, limits, precision, noise, fill, speed, only)
    if expected > CPU_LIMIT_SECONDS:
        shorter = "fewer --tasks or --series-noise 0" if noise and not only else "fewer --tasks"
        log.warning("the cpu preset is expected to take about %d minutes on this CPU (%.2fx the measured one), "
                    "more than its %d even with fewer reports; %s shorten it", round(expected / 60), speed,
                    CPU_LIMIT_SECONDS // 60, shorter)
    short = {t: n for t, n in parse_task_limits(limits).items() if n < CPU_MIN_REPORTS.get(t, 0)}
    if short:
        log.warning("only %s reports per epoch fit on this CPU (%.2fx the measured one): too few to learn from "
                    "(at 0.7x on validation, 10 labeling reports gave macro F1 0.00; --series-noise 0 gave 150 and "
                    "0.70, and 0.07 less on real series descriptions; docs/cpu_preset.md); fewer --tasks give "
                    "them more", " and ".join(f"{n} {t}" for t, n in short.items()), speed)
    return {**CPU_PRESET, "precision": precision, "task_train_limits": limits,
            "extra_tags": {"cpu_speed": f"{speed:g}"}}


SPLITS = ("test", "all")


@dataclass
class EvaluateConfig(RunSettings):
    """Scoring a logged adapter, an adapter folder, or the base model alone (zero-shot).

    adapter: '' (base model only), a folder holding adapter_config.json, or an MLflow run id
    (a checkpoint run, or a fine-tune run: its last checkpoint unless `epoch` is given).
    split: 'test' (the frozen test split of `data`) or 'all' (every record, e.g. a real
    dataset scored by a model trained on synthetic data).
    """

    adapter: str = ""
    epoch: int = 0
    model: str = "smollm2-135m"
    tasks: tuple[str, ...] = PAPER_TASKS
    data: str = "synthetic"
    split: str = "test"
    split_seed: int = 0
    eval_limit: int = 0
    eval_batch_size: int = 16
    max_new_tokens: int = 0  # cap on each task's generation budget; 0 = the task's own
    decoding: str = "constrained"  # or "free" (see DECODINGS)
    max_seq_length: int = 768

    def __post_init__(self) -> None:
        self.tasks = task_tuple(self.tasks)
        self.check_run_settings()
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {SPLITS}, got {self.split!r}")
        for name in ("eval_limit", "epoch", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("eval_batch_size", "max_seq_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        check_decoding(self.decoding)

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow."""
        return flat_params(self)




@dataclass
class HarmonizeConfig(RunSettings):
    """One harmonize job (pipelines.harmonize; pipelines.infer.series_harmonization does it).

    adapter: a fine-tune run id (its last checkpoint, or `epoch`), a checkpoint run id, or a
    folder holding adapter_config.json. input: a DICOM folder (or one DICOM file) or a table of
    descriptions; `column` names the description column (default: found by common names).
    model: the base model; default the one the adapter was trained on (the run's `model` param,
    else adapter_config.json's base_model_name_or_path). output: the CSV to write; default
    ``outputs/harmonized-<input name>.csv``. decoding: "constrained" (the answer is one of the
    task's valid answers, as evaluation and serving score it) or "free". track: log the mapping
    to an MLflow run.
    """

    adapter: str = field(default="", metadata={
        "help": "fine-tune run id (last checkpoint unless --epoch), checkpoint run id, or adapter folder; required"})
    input: str = ""
    column: str = ""
    output: str = ""
    epoch: int = 0
    model: str = field(default="", metadata={
        "help": "base model: a preset, a folder holding config.json, or a cached Hugging Face id "
                "('' = the one the adapter was trained on)"})
    batch_size: int = 16
    decoding: str = "constrained"  # or "free" (see DECODINGS)
    track: bool = True

    def __post_init__(self) -> None:
        if not self.adapter.strip():
            raise ConfigError("--adapter is required: a fine-tune or checkpoint run id, or an adapter folder")
        if not self.input.strip():
            raise ConfigError("--input is required: a folder of DICOM files, or a CSV/TSV/XLSX table")
        self.check_run_settings()
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.epoch < 0:
            raise ConfigError(f"--epoch must be >= 0 (0 = the last checkpoint), got {self.epoch}")
        check_decoding(self.decoding)

    def output_path(self) -> Path:
        """The CSV to write: `output`, else outputs/harmonized-<input name>.csv."""
        from pipelines.data.tables import TABLE_SUFFIXES, split_sheet  # deferred: imports the table readers

        if self.output:
            return Path(self.output).expanduser()
        path, sheet = split_sheet(self.input)
        name = path.stem if path.suffix.lower() in TABLE_SUFFIXES else path.name
        return Path("outputs") / f"harmonized-{name}{'-' + sheet if sheet else ''}.csv"
