"""The study plan: each run's state in the tracking store and claims table, and its cost estimate.

Cost is estimated without loading a model: tokens are characters / 4 (close enough for English
BPE vocabularies to size a job), from the real examples the run would build.

    fine-tune: train tokens = sum(prompt + target tokens) x epochs
               eval tokens  = sum(prompt tokens + generation budget) x checkpoints
    baseline:  eval tokens  = sum(rendered prompt tokens + generation budget), one request each
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipelines.baselines.config import BaselineConfig
from pipelines.config import FinetuneConfig
from pipelines.redaction import redact_url
from pipelines.studies.claims import Claim, ClaimStore
from pipelines.studies.spec import Study, StudyRun
from pipelines.tasks import get_task

CHARS_PER_TOKEN = 4
# Measured LoRA training, prefill and decoding rates per preset (python -m benchmarks.throughput).
DEFAULT_THROUGHPUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h200-throughput.json"
# What the paper ran on: its data and its decoding (README: Paper comparison).
PAPER_DATA = "Open-i chest X-ray reports and brain MRI series descriptions"
PAPER_DECODING = "free"


@dataclass
class RunState:
    """A study run as the stores see it.

    state: done (a FINISHED run), running (a RUNNING run with a live claim), stale (RUNNING, no
    live claim: its worker died), failed / killed (last attempt), missing (never started).
    """

    state: str
    run_id: str = ""
    claim: Claim | None = None
    running_ids: list[str] = field(default_factory=list)  # MLflow runs of this key still RUNNING

    @property
    def todo(self) -> bool:
        return self.state not in ("done", "running")


@dataclass
class Cost:
    """Estimated size of a run; `error` when its data could not be read."""

    examples: int = 0  # train examples x epochs (fine-tune) or requests (baseline)
    train_tokens: int = 0
    eval_tokens: int = 0
    error: str = ""


def study_runs(study: Study, client: MlflowClient | None = None) -> list[Run]:
    """Every top-level run tagged with the study in its experiment (empty when it does not exist yet)."""
    client = client or MlflowClient()
    experiment = client.get_experiment_by_name(study.experiment)
    if experiment is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], f"tags.study = '{study.name}'",
                                  max_results=1000, page_token=token)
        runs += [r for r in page if "study_run_key" in r.data.tags]
        token = page.token
        if not token:
            return runs


def run_states(study: Study, claims: ClaimStore | None = None, client: MlflowClient | None = None,
               runs: list[Run] | None = None) -> dict[str, RunState]:
    """State of every run of the study, by run name (from `runs`, else the study's runs in the store)."""
    by_key: dict[str, list[Run]] = {}
    for run in study_runs(study, client) if runs is None else runs:
        by_key.setdefault(run.data.tags["study_run_key"], []).append(run)
    held = claims.all(study.name) if claims else {}
    states = {}
    for spec in study.runs:
        states[spec.name] = state_of(by_key.get(spec.key, []), held.get(spec.key),
                                     claims.stale_after_s if claims else 0.0)
    return states


def state_of(runs: list[Run], claim: Claim | None, stale_after_s: float) -> RunState:
    newest_first = sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)
    finished = [r for r in newest_first if r.info.status == "FINISHED"]
    if finished:
        return RunState("done", finished[0].info.run_id, claim)
    live = claim is not None and claim.live(stale_after_s)
    running = [r.info.run_id for r in newest_first if r.info.status in ("RUNNING", "SCHEDULED")]
    if live:
        return RunState("running", running[0] if running else "", claim, running)
    if running:
        return RunState("stale", running[0], claim, running)
    if newest_first:
        return RunState(newest_first[0].info.status.lower(), newest_first[0].info.run_id, claim)
    return RunState("missing", "", claim)


def store_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist: opening it would create an empty database."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file()


def planned_states(study: Study, tracking_uri: str, claims_url: str, stale_after_s: float) -> dict[str, RunState]:
    """run_states for a plan, creating nothing: a SQLite tracking store or claims file that does not
    exist yet holds no runs and no claims."""
    claims = None if store_missing(claims_url) else ClaimStore(claims_url, stale_after_s)
    runs = [] if store_missing(tracking_uri) else None
    return run_states(study, claims, MlflowClient(tracking_uri) if runs is None else None, runs)


# ---------------------------------------------------------------- cost


@functools.lru_cache(maxsize=8)
def _split_data(data: str, split_seed: int):
    from pipelines.data.sources import load_data
    from pipelines.data.split import split_bundle

    bundle = load_data(data)
    return bundle, split_bundle(bundle, split_seed)


def _tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _budget(task: str, cap: int) -> int:
    return get_task(task).generation_budget(cap)


def estimate_cost(run: StudyRun) -> Cost:
    """Examples and tokens the run will process (see the module docstring for the arithmetic)."""
    from pipelines.data.examples import build_examples

    cfg = run.config
    try:
        bundle, splits = _split_data(cfg.data, cfg.split_seed)
        if isinstance(cfg, BaselineConfig):
            return _baseline_cost(cfg, bundle, splits)
        examples = build_examples(bundle, splits, cfg.tasks, train_limit=cfg.train_limits(),
                                  eval_limit=cfg.eval_limit, series_noise=cfg.series_noise,
                                  series_fill=cfg.series_fill, series_noise_only=cfg.series_noise_only)
    except (ValueError, OSError) as exc:
        return Cost(error=str(exc).splitlines()[0][:120])
    train = [e for ex in examples.train.values() for e in ex]
    eval_once = sum(_tokens(e.prompt) + _budget(e.task, cfg.max_new_tokens)
                    for ex in examples.test.values() for e in ex)
    return Cost(examples=len(train) * cfg.epochs,
                train_tokens=sum(_tokens(e.prompt) + _tokens(e.target) for e in train) * cfg.epochs,
                eval_tokens=eval_once * len(cfg.checkpoint_epochs))


def _baseline_cost(cfg: BaselineConfig, bundle, splits) -> Cost:
    from pipelines.baselines.prompts import load_templates
    from pipelines.data.examples import build_test_examples
    from pipelines.infer.evaluation import input_text

    templates = load_templates(cfg.prompting, cfg.tasks, cfg.prompts_dir)
    test = build_test_examples(bundle, {n: s.test for n, s in splits.items()}, cfg.tasks, cfg.eval_limit)
    tokens = sum(_tokens(templates[t].render(input_text(e.prompt))) + _budget(t, cfg.max_new_tokens)
                 for t, ex in test.items() for e in ex)
    return Cost(examples=sum(len(ex) for ex in test.values()), eval_tokens=tokens)


@dataclass
class RunEstimate:
    name: str
    model: str
    train_hours: float
    eval_hours: float

    @property
    def hours(self) -> float:
        return self.train_hours + self.eval_hours


def estimate_run(cfg: FinetuneConfig, name: str, rates: dict[str, float]) -> RunEstimate:
    """One fine-tune's training and checkpoint-evaluation hours at the preset's measured `rates`:
    training tokens at the LoRA training rate; at each checkpoint, the test prompts and constrained
    answers at the prefill rate, freely generated tokens (the generation budget) at the decode rate."""
    from pipelines.data.examples import build_examples

    cost = estimate_cost(StudyRun(name=name, kind="finetune", settings={}, config=cfg, key=""))
    bundle, splits = _split_data(cfg.data, cfg.split_seed)
    test = build_examples(bundle, splits, cfg.tasks, train_limit=1, eval_limit=cfg.eval_limit).test
    prefill = decode = 0
    for task_name, examples in test.items():
        task = get_task(task_name)
        for e in examples:
            prefill += _tokens(e.prompt)
            if cfg.decoding == "constrained" and task.constrained is not None:
                prefill += _tokens(e.target)
            else:
                decode += _budget(task_name, cfg.max_new_tokens)
    per_checkpoint = prefill / rates["prefill_tokens_per_s"] + decode / rates["decode_tokens_per_s"]
    return RunEstimate(name, cfg.model, cost.train_tokens / rates["train_tokens_per_s"] / 3600,
                       per_checkpoint * len(cfg.checkpoint_epochs) / 3600)


# ---------------------------------------------------------------- how the plan differs from the paper


def paper_deviations(study: Study) -> list[str]:
    """Where the study's runs differ from the paper's setup: data generated instead of the paper's,
    and constrained instead of free decoding."""
    from pipelines.data.sources import get_source, parse_data_spec

    notes = []
    synthetic = []
    for run in study.runs:
        provided = {d for e in parse_data_spec(run.config.data) if e.kind != "synthetic"
                    for d in get_source(e.kind).provides}
        needed = {"series" if t == "harmonization" else "reports" for t in run.config.tasks}
        if needed - provided:
            synthetic.append(run.name)
    if synthetic:
        notes.append(f"data: {len(synthetic)} of {len(study.runs)} runs train or score on synthetic (generated) "
                     f"data, not the paper's {PAPER_DATA}: --set data=openi-csv:/data/indiana_reports.csv,"
                     "series-table:/data/series.xlsx (docs/data_sources.md)")
    finetunes = [r for r in study.runs if isinstance(r.config, FinetuneConfig)]
    other = [r for r in finetunes if r.config.decoding != PAPER_DECODING]
    if other:
        notes.append(f"decoding: {len(other)} of {len(finetunes)} fine-tunes use {other[0].config.decoding} "
                     f"decoding (answers always well-formed), not the paper's {PAPER_DECODING} generation: "
                     f"--set decoding={PAPER_DECODING}")
    return notes


def missing_weights(study: Study) -> dict[str, list[str]]:
    """Models whose weights are not on this machine, with the runs that need them (nothing is loaded)."""
    from pipelines.models import weights_present

    needed: dict[str, list[str]] = {}
    for run in study.runs:
        if isinstance(run.config, FinetuneConfig) or run.config.backend == "local":
            needed.setdefault(run.config.model, []).append(run.name)
    return {model: names for model, names in needed.items() if not weights_present(model)}


def weights_notes(missing: dict[str, list[str]]) -> list[str]:
    """How to provide each missing model: the `hf download` command into the preset's folder."""
    from pipelines.models import MODEL_PRESETS, preset_dir

    if not missing:
        return []
    lines = ["weights missing on this machine (nothing is downloaded at run time; on a machine with network "
             "access run these, then copy the folders here):"]
    for model, runs in missing.items():
        how = (f"hf download {MODEL_PRESETS.get(model).source} --local-dir {preset_dir(model)}"
               if model in MODEL_PRESETS else "pass a folder holding the model as model: in the study file")
        lines.append(f"  {model} ({len(runs)} run{'s' * (len(runs) > 1)}): {how}")
    return lines


def hours_note(study: Study, throughput_file: Path) -> str:
    """The fine-tunes' estimated GPU hours at the throughput measured in `throughput_file`."""
    try:
        throughput = json.loads(throughput_file.read_text())
    except (OSError, ValueError) as exc:
        return f"estimated time: unknown, no throughput measurement at {throughput_file} ({exc.__class__.__name__})"
    hours, unmeasured = 0.0, []
    for run in study.runs:
        if not isinstance(run.config, FinetuneConfig):
            continue
        rates = throughput.get("presets", {}).get(run.config.model)
        try:
            hours += estimate_run(run.config, run.name, rates).hours if rates else 0.0
        except (ValueError, OSError):  # its data cannot be read here: the cost table says why
            rates = None
        if not rates:
            unmeasured.append(run.name)
    left = f"; not estimated: {', '.join(unmeasured)}" if unmeasured else ""
    took = f"{hours:.1f} h" if hours >= 1 else f"{max(hours * 60, 1):.0f} min"
    return (f"estimated time: about {took} of fine-tuning on one GPU at the throughput measured in "
            f"{throughput_file.name} (python -m benchmarks.study_estimate){left}; baselines are API calls, "
            "not counted")


def plan_notes(study: Study, throughput_file: Path = DEFAULT_THROUGHPUT) -> list[str]:
    """What the plan table does not show: deviations from the paper, missing weights, estimated hours."""
    deviations = paper_deviations(study)
    notes = ["differences from the paper:", *(f"  {d}" for d in deviations)] if deviations else []
    return [*notes, *weights_notes(missing_weights(study)), hours_note(study, throughput_file)]


# ---------------------------------------------------------------- the printed plan


def human(n: int) -> str:
    """1234567 -> '1.2M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _describe(run: StudyRun) -> str:
    cfg = run.config
    tasks = "all" if len(cfg.tasks) == 3 else ",".join(cfg.tasks)
    if isinstance(cfg, BaselineConfig):
        remote = f" {redact_url(cfg.base_url)}{_remote_note(cfg)}" if cfg.backend == "openai" else ""
        return f"{cfg.model} {cfg.prompting} via {cfg.backend}{remote}; tasks {tasks}"
    poison = f" poison {cfg.poison_rate:g}" if cfg.poison_rate else ""
    checkpoints = ",".join(map(str, cfg.checkpoint_epochs))
    return (f"{cfg.model} tasks {tasks}{poison}; {cfg.epochs} ep @ {checkpoints}, "
            f"bs {cfg.batch_size}, lr {cfg.learning_rate:g}")


def _remote_note(cfg: BaselineConfig) -> str:
    from pipelines.baselines.privacy import inspect_endpoint

    try:
        local = inspect_endpoint(cfg.base_url).local
    except ValueError as exc:
        return f" (invalid: {exc})"
    if local:
        return ""
    return " (remote, allowed)" if cfg.allow_remote else " (remote: refused without --allow-remote)"


def format_plan(study: Study, states: dict[str, RunState], costs: dict[str, Cost] | None = None) -> str:
    """The matrix as a text table, with totals of what is still to do."""
    costs = costs or {}
    lines = [f"study {study.name!r} ({study.path}), experiment {study.experiment!r}: {len(study.runs)} runs",
             f"{'#':>2}  {'run':<34} {'kind':<8} {'state':<9} {'ex x ep':>8} {'train tok':>9} "
             f"{'eval tok':>9}  settings"]
    todo = Cost()
    for i, run in enumerate(study.runs, 1):
        state, cost = states[run.name], costs.get(run.name, Cost())
        note = state.state
        if state.state == "running" and state.claim:
            note += f" ({state.claim.worker})"
        sizes = (f"{'?':>8} {'?':>9} {'?':>9}" if cost.error else
                 f"{human(cost.examples):>8} {human(cost.train_tokens):>9} {human(cost.eval_tokens):>9}")
        lines.append(f"{i:>2}  {run.name:<34} {run.kind:<8} {note:<9} {sizes}  {_describe(run)}")
        if cost.error:
            lines.append(f"{'':>4}cost unknown: {cost.error}")
        if state.todo:
            todo.examples += cost.examples
            todo.train_tokens += cost.train_tokens
            todo.eval_tokens += cost.eval_tokens
    done = sum(s.state == "done" for s in states.values())
    left = sum(s.todo for s in states.values())
    lines.append(f"{done} done, {left} to run: about {human(todo.examples)} example-epochs, "
                 f"{human(todo.train_tokens)} training tokens, {human(todo.eval_tokens)} evaluation tokens "
                 f"(tokens ~ characters / {CHARS_PER_TOKEN})")
    return "\n".join(lines)
