"""Shared command-line plumbing: dataclass fields become --options, errors become one clear line."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_type_hints

from pipelines.config import BOOLEAN_WORDS, ConfigError
from pipelines.config import parse_bool as parse_bool_value
from pipelines.offline import apply_offline_defaults

SKIP_FIELDS = {"extra_tags"}
# Options spelled other than their field: the run's `study` tag is `--study-tag` (`--study` still
# works), so that it is not mistaken for a study file or an Optuna study.
OPTION_NAMES: dict[str, tuple[str, ...]] = {"study": ("--study-tag", "--study")}


def setup_logging() -> None:
    """INFO logs with timestamps; quiet the chatty libraries; offline by default (no Hub calls, no
    telemetry: pipelines.offline)."""
    apply_offline_defaults()
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "alembic", "mlflow.store.db.utils", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# One line per config field, shared by every entry point with that field (finetune, evaluate,
# baseline, register, benchmark); {presets}, {tasks} and {sources} are filled from the registries.
# A field may instead carry its own: field(default=..., metadata={"help": "..."}).
FIELD_HELP: dict[str, str] = {
    "model": "base model: a preset ({presets}), a folder holding config.json, or a cached Hugging Face id",
    "tasks": "comma-separated tasks ({tasks})",
    "data": "data spec, e.g. synthetic or openi-csv:/data/reports.csv; source kinds: {sources} "
            "(docs/data_sources.md)",
    "epochs": "training epochs",
    "checkpoint_epochs": "comma-separated epochs at which the adapter is saved and scored (a checkpoint run each)",
    "batch_size": "examples per batch (register: rows generated together when serving)",
    "grad_accum": "batches per optimizer step (effective batch = batch size x grad accum)",
    "learning_rate": "peak learning rate",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha (the update is scaled by alpha / r)",
    "lora_dropout": "dropout on the LoRA input, in [0, 1)",
    "lora_targets": "comma-separated module names LoRA adapts ('' = the preset's)",
    "poison_rate": "share of labeling training reports set to all-negative (robustness ablation), in [0, 1]",
    "seed": "seed of LoRA initialization and data order",
    "split_seed": "seed of the frozen 80:20 train/test split",
    "train_limit": "training examples per task (0 = the whole train split)",
    "task_train_limits": "per-task training examples that replace --train-limit, e.g. labeling=320,impression=120 "
                         "(0 = the whole train split)",
    "eval_limit": "test examples per task (0 = the whole test split)",
    "eval_split": "where checkpoints are scored: the test split, or a validation slice of the train split (sweeps)",
    "max_new_tokens": "cap on each task's generation budget (0 = the task's own)",
    "decoding": "constrained: the fixed parts of structured answers are forced; free: greedy generation "
                "of the whole answer (the paper's)",
    "max_seq_length": "longest tokenized example; longer ones are truncated",
    "eval_batch_size": "examples per generation batch when scoring",
    "packing": "put the examples of a batch end to end in one row instead of padding them",
    "gradient_checkpointing": "recompute activations in the backward pass: less memory, slower (4-7B presets)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "processes": "processes that train one fine-tune together, started with torchrun (1 = this process only)",
    "precision": "weights and autocast precision (auto: bf16 on a GPU that has it, else fp32)",
    "study": "study tag: the tag that groups runs for the analysis and report (not a study file)",
    "experiment": "MLflow experiment of the runs",
    "run_name": "MLflow run name ('' = made from the settings)",
    "output_dir": "folder for local copies: adapters, predictions, trainer state",
    "disk_reserve_mb": "free space (MB) to leave on the output disk beyond what the run writes",
    "adapter": "a checkpoint or fine-tune run id, an adapter folder, or '' for the base model alone",
    "epoch": "checkpoint epoch of a fine-tune run (0 = the last; register: the best by --metric)",
    "split": "test: the frozen test split of --data; all: every record (e.g. a real dataset)",
    "backend": "where the model runs: local (in-process) or openai (an OpenAI-compatible endpoint); "
               "rules (keyword and negation rules, labeling only) and majority (most frequent training "
               "answer) run no model",
    "prompting": "prompt set (prompts/<mode>/<task>.txt)",
    "base_url": "the endpoint's /v1 root ('' = $OPENAI_BASE_URL)",
    "api_key_env": "name of the environment variable holding the API key",
    "allow_remote": "allow sending report text to an endpoint off this machine or private network",
    "concurrency": "requests in flight at once (openai)",
    "max_retries": "retries of a failed request",
    "timeout_s": "seconds per request",
    "backoff_s": "first retry wait (s) when the server sends no Retry-After; doubles each time",
    "temperature": "sampling temperature (0 = greedy; the local backend is always greedy)",
    "cache": "SQLite file caching responses, so re-runs are free ('' = no cache)",
    "prompts_dir": "folder of prompt templates ('' = the repository's prompts/)",
    "run": "fine-tune, sweep trial or checkpoint run id ('' = the latest multi-task fine-tune)",
    "metric": "checkpoint metric that picks the best epoch when --epoch is 0",
    "mode": "whether the best --metric is the largest or the smallest",
    "name": "registered model name",
    "alias": "alias of the new version (letters, digits, _ or -)",
    "weights_dtype": "dtype of the stored base weights (auto: the fine-tune's precision)",
    "train_per_task": "training examples per task",
    "eval_per_task": "test examples per task (0 = training only)",
    "reference_max_new_tokens": "generation budget of the paper's reference method",
    "input": "DICOM folder (or one file), or a CSV/TSV/XLSX table of descriptions (file.xlsx#Sheet2); required",
    "column": "description column of a table ('' = found by its name)",
    "output": "CSV to write ('' = outputs/harmonized-<input name>.csv)",
    "track": "log the mapping as an MLflow run (--no-track: write the CSV only)",
}


def _closed(module: str, name: str) -> Callable[[], Sequence[str]]:
    """The valid values of an option: a constant tuple, or a Registry's names, imported when asked."""
    def values() -> Sequence[str]:
        import importlib

        found = getattr(importlib.import_module(module), name)
        return tuple(found.names()) if hasattr(found, "names") else tuple(found)
    return values


# Options whose values are a closed set: argparse refuses the rest, and --help lists them.
FIELD_CHOICES: dict[str, Callable[[], Sequence[str]]] = {
    "decoding": _closed("pipelines.config", "DECODINGS"),
    "precision": _closed("pipelines.config", "PRECISIONS"),
    "eval_split": _closed("pipelines.config", "EVAL_SPLITS"),
    "split": _closed("pipelines.config", "SPLITS"),
    "backend": _closed("pipelines.baselines.backends", "BACKENDS"),
    "prompting": _closed("pipelines.baselines.config", "PROMPTING_MODES"),
    "mode": _closed("pipelines.serving.registration", "MODE"),
    "weights_dtype": _closed("pipelines.serving.registration", "WEIGHT_DTYPES"),
}


def field_help(name: str, with_choices: bool = False) -> str:
    """FIELD_HELP[name] with the registries' names filled in (and the valid values, if asked)."""
    text = FIELD_HELP.get(name, "")
    if with_choices and name in FIELD_CHOICES:
        text += f"; one of {', '.join(FIELD_CHOICES[name]())}"
    if "{" not in text:
        return text
    from pipelines.data.sources import source_names
    from pipelines.models import MODEL_PRESETS
    from pipelines.tasks import task_names

    return text.format(presets=", ".join(MODEL_PRESETS.names()), tasks=", ".join(task_names()),
                       sources=", ".join(source_names()))


class Switch(argparse.Action):
    """The one spelling of a boolean option: `--name` (true), `--name true|false` (what MLproject
    commands pass; also yes/no, on/off, 1/0) and `--no-name` (false). `--no-name true|false` means
    the opposite value, as older MLproject commands passed it."""

    def __init__(self, option_strings: list[str], dest: str, default: Any = None, help: str | None = None,
                 **kwargs: Any) -> None:
        negatives = [f"--no-{o[2:]}" for o in option_strings if o.startswith("--")]
        super().__init__([*option_strings, *negatives], dest, nargs="?", default=default,
                         metavar="true|false", help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        try:
            value = True if values is None else parse_bool_value(values, self.dest)
        except ConfigError:
            raise argparse.ArgumentError(self, f"expected true or false, got {values!r}") from None
        setattr(namespace, self.dest, not value if (option_string or "").startswith("--no-") else value)


def add_switch(parser: Any, name: str, help: str, default: bool | None = False,
               shown_default: bool | None = None, dest: str | None = None) -> None:
    """Add a Switch `name` (and `--no-...`) to a parser or argument group."""
    shown = default if shown_default is None else shown_default
    extra = {"dest": dest} if dest else {}
    parser.add_argument(name, action=Switch, default=default, help=with_default(help, str(shown).lower()), **extra)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Docstring descriptions as written; a Switch shown as `--name [true|false], --no-name`."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, Switch):
            return ", ".join(o if o.startswith("--no-") else f"{o} [true|false]" for o in action.option_strings)
        return super()._format_action_invocation(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the lab's conventions: no abbreviations (`--epoch` is refused by name, not taken
    for --epochs), Switch booleans, and a usage error as one line naming the option, exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs["formatter_class"] = HelpFormatter
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if "prog" not in kwargs and spec is not None:  # `python -m pipelines.finetune`, not `finetune.py`
            kwargs["prog"] = f"python -m {spec.name.removesuffix('.__main__')}"
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._bare_switches(words), namespace)

    def _bare_switches(self, words: list[str]) -> list[str]:
        """A switch takes the next word only when it is true or false: `--plan studies/x.yaml` is
        `--plan=true studies/x.yaml`."""
        switches = {o for a in self._actions if isinstance(a, Switch) for o in a.option_strings}
        out = list(words)
        self._after_switch: dict[str, str] = {}  # a word left after a bare switch -> the switch
        for i, word in enumerate(words[:-1]):
            if word == "--":
                break
            if word in switches and words[i + 1].strip().lower() not in BOOLEAN_WORDS:
                out[i] = f"{word}=true"
                self._after_switch.setdefault(words[i + 1], word)
        return out

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line on stderr (with the closest valid option for an unknown one), exit status 2;
        under `mlflow run` the run MLflow created is deleted first."""
        message += self._close_match(message)
        discard_project_run(message)
        self.exit(2, f"error: {message} (--help lists the options)\n")

    def _close_match(self, message: str) -> str:
        if "unrecognized arguments" not in message:
            return ""
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        rest = message.split(":", 1)[-1]
        for word, switch in getattr(self, "_after_switch", {}).items():
            if word and word in rest:
                return f"; {switch} takes true or false (or nothing), not {word!r}"
        for word in rest.split():
            near = difflib.get_close_matches(word.split("=")[0], known, n=1) if word.startswith("--") else []
            if near:
                return f"; did you mean {near[0]}?"
        return ""


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type,
                         preset: dict[str, Any] | None = None) -> None:
    """One --option per dataclass field (underscores become dashes), described by FIELD_HELP and
    limited to FIELD_CHOICES where the values are a closed set; the defaults shown are the class's,
    or those of the default `preset`. Also --config FILE: a YAML file of these options (a run's
    logged config/<entry point>.yaml repeats it)."""
    hints = get_type_hints(config_cls)
    parser.add_argument("--config", default="", metavar="FILE",
                        help="YAML file of these options (names as below, - or _); options given on the "
                             "command line win. A run's logged config/<entry point>.yaml repeats that run")
    for f in dataclasses.fields(config_cls):
        if f.name in SKIP_FIELDS:
            continue
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = (preset or {}).get(f.name, default)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        names = OPTION_NAMES.get(f.name, (f"--{f.name.replace('_', '-')}",))
        text = f.metadata.get("help") or field_help(f.name)
        if hint is bool:
            add_switch(parser, names[0], text, default=None, shown_default=bool(default), dest=f.name)
            continue
        kind = {int: int, float: float}.get(hint, str)
        choices = FIELD_CHOICES[f.name]() if f.name in FIELD_CHOICES else None
        parser.add_argument(*names, dest=f.name, type=kind, default=None, choices=choices,
                            help=with_default(text, shown))


def with_default(text: str, default: object) -> str:
    """`text (default: X)`; an empty default is shown as ''."""
    shown = "''" if default == "" else default
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def parse_bool(text: str) -> bool:
    """'true'/'false' (also yes/no, 1/0, on/off; any case) -> bool; anything else is an argparse error."""
    try:
        return parse_bool_value(text, "option")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def explicit_options(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The config fields given on the command line (add_config_arguments leaves the rest None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
            if getattr(args, f.name, None) is not None}


def given_options(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """What the user chose: --config FILE's fields, then the options given explicitly (no defaults)."""
    from_file = load_config_file(args.config, config_cls) if getattr(args, "config", "") else {}
    return {**from_file, **explicit_options(args, config_cls)}


def config_from_args(args: argparse.Namespace, config_cls: type, base: dict[str, Any]) -> Any:
    """Build the config: class defaults, then `base` (a preset), then --config FILE, then options
    given explicitly."""
    return config_cls(**{**base, **given_options(args, config_cls)})


def load_config_file(path: str | Path, config_cls: type) -> dict[str, Any]:
    """The options of a YAML (or JSON) file as field values of `config_cls`, typed like the command
    line's; an unknown name or a bad value is a ConfigError naming the file and the option."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    hints = get_type_hints(config_cls)
    known = [f.name for f in dataclasses.fields(config_cls)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f"; valid options: {', '.join(known)}"
            raise ConfigError(f"--config {path}: unknown option {key!r}{hint}")
        values[name] = _file_value(value, hints[name], f"--config {path}: option {key!r}")
    return values


def _file_value(value: Any, hint: Any, where: str) -> Any:
    """A YAML value converted like the command line converts it (YAML reads 8e-4 as a string)."""
    try:
        if hint is bool:
            return parse_bool_value(value, where)
        if hint is int and not isinstance(value, bool):
            return int(value)
        if hint is float and not isinstance(value, bool):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}") from None
    return tuple(value) if isinstance(value, list) else value


def fail(exc: BaseException) -> int:
    """Print an error as one clear line on stderr; exit status 2. Under `mlflow run`, the run MLflow
    created for this command is deleted (pipelines.runs.tracking.discard_project_run)."""
    print(f"error: {exc}", file=sys.stderr)
    discard_project_run(str(exc))
    return 2


def discard_project_run(reason: str) -> None:
    """Bad input under `mlflow run` (MLFLOW_RUN_ID set): leave no run behind (see tracking)."""
    if os.environ.get("MLFLOW_RUN_ID"):
        from pipelines.runs.tracking import discard_project_run as discard

        discard(reason)


def add_tracking_uri_argument(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri: the MLflow store to use instead of $MLFLOW_TRACKING_URI / ./mlflow.db."""
    parser.add_argument("--tracking-uri", default="", metavar="URI",
                        help="MLflow store to use, e.g. sqlite:///path/mlflow.db or http://host:5000 "
                             "(default: $MLFLOW_TRACKING_URI, else mlflow.db in the current folder)")


def apply_tracking_uri(args: argparse.Namespace) -> None:
    """Make --tracking-uri, when given, the store every later MLflow call uses."""
    if getattr(args, "tracking_uri", ""):
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri


def config_block(config: Any) -> str:
    """A config dataclass as a short YAML block for the log (lists on one line): the run's
    config/<entry point>.yaml, as --config reads it."""
    import yaml

    from pipelines.config import config_document

    return yaml.safe_dump(config_document(config), sort_keys=False, default_flow_style=None, width=120).rstrip()


def config_parser(config_cls: type, description: str | None, preset: dict[str, Any] | None = None) -> ArgumentParser:
    """An entry point's parser: one --option per field of `config_cls` (add_config_arguments),
    --config FILE and --tracking-uri."""
    parser = ArgumentParser(description=description)
    add_config_arguments(parser, config_cls, preset)
    add_tracking_uri_argument(parser)
    return parser


def parse_config(parser: argparse.ArgumentParser, config_cls: type, argv: list[str] | None = None,
                 preset: dict[str, Any] | None = None) -> Any:
    """Command line -> validated `config_cls` (preset values first, --config FILE, then explicit options);
    --tracking-uri applied."""
    args = parser.parse_args(argv)
    apply_tracking_uri(args)
    return config_from_args(args, config_cls, preset or {})


def run_command(run: Callable[[], int], errors: tuple[type[BaseException], ...] = (ValueError, RuntimeError)) -> int:
    """An entry point's body: logging set up, `run()`'s exit status, or `errors` as one line (exit 2)."""
    setup_logging()
    try:
        return run()
    except errors as exc:
        return fail(exc)
