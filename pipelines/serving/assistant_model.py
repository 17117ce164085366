"""The clinical assistant as an MLflow pyfunc: one fine-tuned model answering all three tasks.

A request is a table with one row per question, columns `task` and `text`; rows may mix
tasks. The answer has one row per request row, in the same order:

    task          the task asked for, as given
    output        labeling: the 14 labels as a JSON object string ({"No Finding": "No", ...});
                  harmonization: the series class (T1, T2, T2/FLAIR, DWI, ADC, SWI, Other);
                  impression: the impression text. Empty when nothing could be parsed.
    parse_status  ok | partial | failed, as the task's parser says (failed for a rejected row)
    error         empty for an answered row; otherwise why the row was not answered
    raw_output    what the model generated, before parsing

A row with an unknown task or an empty text gets an `error` and the rest of the batch is still
answered; a request that is not a table of `task` and `text` raises MlflowException, which the
scoring server turns into HTTP 400.

Rows are grouped by task and each group goes through the same batched greedy generation
(left padding, KV cache) and the same parser as the checkpoint's evaluation, with the same
prompt budget, so the served answers are the evaluated ones.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

INPUT_COLUMNS = ("task", "text")
OUTPUT_COLUMNS = ("task", "output", "parse_status", "error", "raw_output")

# Names of the pyfunc's artifacts (folders copied into the logged model).
BASE_MODEL_ARTIFACT = "base_model"
ADAPTER_ARTIFACT = "adapter"

# An IMPRESSION section in an impression request: the task writes it, so it is cut from the input.
_IMPRESSION_SECTION = re.compile(
    r"(?msi)^[ \t]*IMPRESSIONS?[ \t]*:.*?(?=^[ \t]*(?:COMPARISON|INDICATION|FINDINGS|TECHNIQUE|HISTORY)"
    r"[ \t]*:|\Z)"
)


@dataclass(frozen=True)
class Request:
    """One row of a request after validation: `error` is set when it cannot be answered."""

    task: str
    text: str
    error: str = ""


def bad_request(message: str) -> MlflowException:
    """An exception the scoring server reports as HTTP 400 with `message`."""
    return MlflowException.invalid_parameter_value(message)


def request_rows(model_input: Any) -> list[dict[str, Any]]:
    """The request as a list of row dicts; raises bad_request unless it has `task` and `text`.

    Accepts what pyfunc passes after schema enforcement (a pandas DataFrame) and what a direct
    caller may pass: a list of row dicts or a dict of columns.
    """
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input if all(isinstance(v, list) for v in model_input.values())
                                   else [model_input])
    if isinstance(model_input, list):
        if not all(isinstance(row, dict) for row in model_input):
            raise bad_request('send records with columns task and text, such as '
                              '{"task": "labeling", "text": "<report>"}')
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise bad_request(f"expected a table with columns task and text, got {type(model_input).__name__}")
    missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
    if missing:
        raise bad_request(
            f"the request lacks column(s) {missing}: send one record per question with columns "
            'task and text, e.g. {"dataframe_records": [{"task": "harmonization", "text": "AX T2 FLAIR"}]}'
            f"; got columns {sorted(map(str, model_input.columns))}"
        )
    return model_input[list(INPUT_COLUMNS)].to_dict(orient="records")


def task_input(task_name: str, text: str) -> str:
    """The input the task was trained on: an impression request loses any IMPRESSION section."""
    text = text.strip()
    if task_name == "impression":
        text = _IMPRESSION_SECTION.sub("", text).strip()
    return text


def validate_row(row: dict[str, Any], served: Sequence[str]) -> Request:
    """Check one row against the tasks this model serves; never raises."""
    from pipelines.tasks import TASKS

    task, text = row.get("task"), row.get("text")
    task_name = task.strip().lower() if isinstance(task, str) else ""
    shown = "" if task is None else str(task)
    if task_name not in served:
        if task_name in TASKS:
            reason = f"task {shown!r} is not served: this model was fine-tuned on {', '.join(served)}"
        else:
            reason = f"unknown task {shown!r}; valid tasks: {', '.join(served)}"
        return Request(shown, "", reason)
    if not isinstance(text, str) or not text.strip():
        what = "the series description" if task_name == "harmonization" else "the report"
        return Request(task_name, "", f"empty text: send {what} as `text`")
    cleaned = task_input(task_name, text)
    if not cleaned:
        return Request(task_name, "", "the text holds only an IMPRESSION section; send the findings")
    return Request(task_name, cleaned)


def format_output(value: Any) -> str:
    """The parsed value as the `output` column: JSON for labels, plain text otherwise."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def requested_decoding(requested: str | None, default: str) -> str:
    """The request's `decoding` param, or the model's when empty; an unknown value is a ValueError."""
    from pipelines.config import DECODINGS

    decoding = (requested or "").strip() or default
    if decoding not in DECODINGS:
        raise ValueError(f"param decoding must be one of {DECODINGS} (or empty for the model's), got {decoding!r}")
    return decoding


def answer(model, tokenizer, model_input: Any, served: Sequence[str], *, batch_size: int = 16,
           max_seq_length: int = 768, max_new_tokens: int = 0,
           decoding: str = "constrained") -> list[dict[str, str]]:
    """Answer every row of a request, in order; rejected rows carry an `error`.

    max_new_tokens caps each task's own generation budget (0 = the task's budget) and decoding
    is "constrained" or "free", as in evaluation.
    """
    from pipelines.infer import generation
    from pipelines.tasks import get_task
    from pipelines.tasks.base import format_prompt

    requests = [validate_row(row, served) for row in request_rows(model_input)]
    answers = [{"task": r.task, "output": "", "parse_status": "failed", "error": r.error, "raw_output": ""}
               for r in requests]
    for task_name in served:
        rows = [i for i, r in enumerate(requests) if not r.error and r.task == task_name]
        if not rows:
            continue
        task = get_task(task_name)
        prompts = [format_prompt(task.directive, requests[i].text) for i in rows]
        budget = task.generation_budget(max_new_tokens)
        outputs = generation.complete(model, tokenizer, task, prompts, [requests[i].text for i in rows],
                                      decoding=decoding, max_new_tokens=budget, batch_size=batch_size,
                                      max_seq_length=max_seq_length, desc=f"serve {task_name}")
        for i, raw in zip(rows, outputs, strict=True):
            parsed = task.parse(raw)
            answers[i].update(output=format_output(parsed.value), parse_status=parsed.status,
                              raw_output=raw)
    return answers


def load_assistant(base_model: Path, adapter: Path, device: str = "auto", precision: str = "auto",
                   merge: bool = False):
    """The base model with the LoRA adapter applied, and its tokenizer, ready for generation."""
    from pipelines.infer.loading import load_for_inference

    return load_for_inference(Path(base_model), adapter, precision, device, merge=merge)


class ClinicalAssistant(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads base model + adapter from the model's artifacts, answers requests.

    model_config keys: tasks (served, comma-separated, in order), batch_size, max_seq_length and
    max_new_tokens (the fine-tune's evaluation settings: prompt budget, cap on each task's
    generation budget, 0 = none), device ("auto": cuda, then mps, then cpu; the environment
    variable CLINICAL_ASSISTANT_DEVICE overrides it), precision ("auto": bf16 on a capable GPU,
    else fp32), merge_adapter (fold LoRA into the weights at load; off, so that the answers are
    exactly the evaluated ones).
    decoding: "constrained" (structured tasks forced into a valid answer) or "free".
    Request params: max_new_tokens (a further cap), batch_size (0 = the model's) and decoding
    ("" = the model's).
    """

    def load_context(self, context) -> None:
        # Everything is inside the model; never wait on the Hugging Face hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        config = context.model_config or {}
        self.served = tuple(t for t in config["tasks"].split(",") if t)
        self.batch_size = int(config.get("batch_size", 16))
        # "max_prompt_tokens": the key of models registered before it meant the sequence length
        self.max_seq_length = int(config.get("max_seq_length", config.get("max_prompt_tokens", 768)))
        self.max_new_tokens = int(config.get("max_new_tokens", 0))
        self.decoding = str(config.get("decoding", "constrained"))
        self.model, self.tokenizer = load_assistant(
            Path(context.artifacts[BASE_MODEL_ARTIFACT]), Path(context.artifacts[ADAPTER_ARTIFACT]),
            device=os.environ.get("CLINICAL_ASSISTANT_DEVICE", config.get("device", "auto")),
            precision=config.get("precision", "auto"), merge=bool(config.get("merge_adapter", False)),
        )

    # The pd.DataFrame hint: the logged signature, not type hints, validates requests.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        caps = [c for c in (self.max_new_tokens, int(params.get("max_new_tokens") or 0)) if c > 0]
        batch_size = int(params.get("batch_size") or 0)
        rows = answer(self.model, self.tokenizer, model_input, self.served,
                      batch_size=batch_size if batch_size > 0 else self.batch_size,
                      max_seq_length=self.max_seq_length, max_new_tokens=min(caps, default=0),
                      decoding=requested_decoding(params.get("decoding"), self.decoding))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
