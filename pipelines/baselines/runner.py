"""Run a baseline: prompt a chat model on the frozen test split, score like a fine-tune, log to MLflow.

`run_baseline(config)` is the library call behind the `baseline` entry point and study runs.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from pipelines.baselines.backends import Backend, ChatRequest, Completion, complete_cached, create_backend
from pipelines.baselines.cache import ResponseCache
from pipelines.baselines.config import BaselineConfig
from pipelines.baselines.privacy import Endpoint, check_endpoint
from pipelines.baselines.prompts import PromptTemplate, load_templates
from pipelines.data.examples import build_test_examples
from pipelines.data.sources import load_data
from pipelines.data.split import manifest, split_bundle
from pipelines.infer.evaluation import TaskEvaluation, input_text, merged_metrics, score_outputs
from pipelines.redaction import redact_url
from pipelines.runs import schema, tracking
from pipelines.tasks import get_task
from pipelines.tasks.base import Example

log = logging.getLogger(__name__)

COMPLETION_STATUSES = ("ok", "cached", "malformed", "failed")


@dataclass
class BaselineResult:
    """What a finished baseline produced."""

    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # completions by status, requests sent


@dataclass
class PreparedBaseline:
    """Everything resolved before any MLflow run exists or any request is sent."""

    config: BaselineConfig
    endpoint: Endpoint | None
    templates: dict[str, PromptTemplate]
    test: dict[str, list[Example]]
    manifest: dict
    bundle: object
    splits: dict


def prepare_baseline(config: BaselineConfig) -> PreparedBaseline:
    """Privacy guard first (refuses before anything else happens), then prompts, data and split."""
    endpoint = check_endpoint(config.base_url, config.allow_remote) if config.backend == "openai" else None
    templates = load_templates(config.prompting, config.tasks, config.prompts_dir)
    bundle = load_data(config.data)
    splits = split_bundle(bundle, config.split_seed)
    test = build_test_examples(bundle, {name: s.test for name, s in splits.items()}, config.tasks,
                               config.eval_limit)
    return PreparedBaseline(config, endpoint, templates, test, manifest(bundle, splits, config.split_seed),
                            bundle, splits)


def build_requests(p: PreparedBaseline, task: str) -> list[ChatRequest]:
    """One user message per test example, from the task's template and the example's input."""
    budget = get_task(task).generation_budget(p.config.max_new_tokens)
    template = p.templates[task]
    requests = []
    for e in p.test[task]:
        text = input_text(e.prompt)
        requests.append(ChatRequest(({"role": "user", "content": template.render(text)},), budget,
                                    task=task, task_input=text))
    return requests


def default_run_name(config: BaselineConfig) -> str:
    """e.g. 'baseline-gpt-4o-prompt-engineered'."""
    model = Path(config.model).name if "/" in config.model else config.model
    return config.run_name or f"baseline-{model}-{config.prompting}"


def baseline_params(p: PreparedBaseline, backend: Backend | None = None) -> dict[str, str]:
    """The run's params: resolved config, data facts, endpoint host, prompt hashes, code version.

    "decoding" is the back end's own `decoding` when it has one (rules, majority), else greedy or
    the sampling temperature.
    """
    params = p.config.as_params()
    params.update({
        "base_url": redact_url(p.config.base_url),  # never a password given in the URL
        "data_fingerprint": p.manifest["fingerprint"],
        "endpoint_host": p.endpoint.host if p.endpoint else "in-process",
        "allow_remote": str(p.config.allow_remote),
        "decoding": getattr(backend, "decoding", "") or (
            "greedy" if p.config.temperature == 0 else f"temperature={p.config.temperature}"),
        "git_commit": tracking.git_commit(),
        **{f"prompt_sha/{task}": t.sha for task, t in p.templates.items()},
    })
    return params


def run_baseline(config: BaselineConfig, run_tags: dict[str, str] | None = None,
                 backend: Backend | None = None) -> BaselineResult:
    """Prompt, parse, score and log one baseline; returns its run id and metrics.

    `backend` replaces the configured one (tests); the privacy guard runs either way.
    """
    # -- resolve everything (and refuse a remote endpoint) before a run exists
    prepared = prepare_baseline(config)
    tracking.setup_tracking(config.experiment)
    backend = backend or create_backend(config)
    cache = ResponseCache(config.cache) if config.cache else None

    tags = {**schema.run_tags(schema.Role.BASELINE, config.study, config.model, config.tasks,
                              prompting=config.prompting, backend=config.backend), **(run_tags or {})}
    with tracking.scored_run(default_run_name(config), baseline_params(prepared, backend), tags,
                             manifest=prepared.manifest) as run, \
            (contextlib.closing(cache) if cache else contextlib.nullcontext()):
        for task, template in prepared.templates.items():  # the prompts used
            mlflow.log_text(template.text, f"prompts/{config.prompting}/{task}.txt")

        # -- ask the model, then parse and score exactly like a fine-tuned model's outputs
        evaluations, counts = ask_and_score(prepared, backend, cache)

        # -- metrics and per-example predictions
        metrics = merged_metrics(evaluations)
        tracking.log_scores(metrics, {task: ev.predictions for task, ev in evaluations.items()}, step=0)
        mlflow.log_metrics({f"baseline/{k}": float(v) for k, v in counts.items()}, step=0)
    return BaselineResult(run.info.run_id, metrics, counts)


def ask_and_score(p: PreparedBaseline, backend: Backend,
                  cache: ResponseCache | None) -> tuple[dict[str, TaskEvaluation], dict[str, int]]:
    """Each task's completions (cached or asked), scored; counts of completions by status and requests."""
    evaluations: dict[str, TaskEvaluation] = {}
    counts = dict.fromkeys(COMPLETION_STATUSES, 0)
    sent_before, retries_before = backend.stats.requests, backend.stats.retries
    for task, examples in p.test.items():
        start = time.perf_counter()
        completions = complete_cached(backend, build_requests(p, task), cache)
        evaluations[task] = score_outputs(task, examples, [c.text for c in completions],
                                          time.perf_counter() - start)
        _annotate(evaluations[task], completions)
        for c in completions:
            counts[c.status] += 1
        mlflow.log_metrics(_task_counts(task, completions), step=0)
    counts["requests_sent"] = backend.stats.requests - sent_before
    counts["retries"] = backend.stats.retries - retries_before
    if counts["malformed"] or counts["failed"]:
        log.warning("%d malformed and %d failed responses were scored as empty outputs",
                    counts["malformed"], counts["failed"])
    return evaluations, counts


def _annotate(evaluation: TaskEvaluation, completions: list[Completion]) -> None:
    """Add each example's response status (and error) to its prediction record."""
    for record, completion in zip(evaluation.predictions, completions, strict=True):
        record["response_status"] = completion.status
        if completion.error:
            record["response_error"] = completion.error


def _task_counts(task: str, completions: list[Completion]) -> dict[str, float]:
    out = {f"baseline/{task}/{s}": float(sum(c.status == s for c in completions))
           for s in COMPLETION_STATUSES}
    out[f"baseline/{task}/prompt_tokens"] = float(sum(c.prompt_tokens for c in completions))
    out[f"baseline/{task}/completion_tokens"] = float(sum(c.completion_tokens for c in completions))
    return out
