"""The shape of a task: how a record becomes a prompt and target, how output is parsed and scored."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ParseStatus = Literal["ok", "partial", "failed"]

RESPONSE_MARKER = "### Response:\n"


def format_prompt(directive: str, text: str) -> str:
    """Instruction format shared by every task and model: directive, input, response marker."""
    return f"### Instruction:\n{directive}\n\n### Input:\n{text}\n\n{RESPONSE_MARKER}"


@dataclass(frozen=True)
class Example:
    """One task instance. `id` is stable across runs (``<task>/<record id>``) so runs can be paired."""

    id: str
    task: str
    prompt: str
    target: str
    reference: Any


@dataclass(frozen=True)
class Parsed:
    """A parsed model output; `value` is None when nothing usable was found."""

    value: Any
    status: ParseStatus


@dataclass
class TaskScores:
    """Corpus metrics (names without the task prefix) and one score dict per example."""

    metrics: dict[str, float]
    per_example: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SlotChoices:
    """Constrained answer shape: fixed text with one choice per slot.

    render(values) -> the whole answer for one value per slot (labeling: the JSON object of
    the 14 labels, keys fixed, each value Yes or No). Only the slot values are decided by the
    model; everything else is forced, so the answer is always valid.
    """

    render: Callable[[Sequence[str]], str]
    slots: int
    values: tuple[str, ...]


@dataclass(frozen=True)
class ScoredCandidates:
    """Constrained answer shape: the most likely of a few complete answers.

    candidates(input text) -> every valid answer (harmonization: the description mapped to
    each of the seven classes); the model's summed log-likelihood picks one.
    """

    candidates: Callable[[str], list[str]]


ConstrainedShape = SlotChoices | ScoredCandidates


@dataclass(frozen=True)
class Metric:
    """A metric a task logs as `<task>/<name>`, with what every consumer needs to show it.

    label: how tables and axes name it; scale: its range (axes span it); format: a Python/d3
    number format; headline: charted and compared across runs (leaderboard figure, trajectory,
    ablations, analysis headline figures, finish messages); example_score: the per-example score
    (the `scores` of a prediction record) whose mean over the examples is this metric ('' when it
    is not a mean, e.g. macro F1): a task without its own analysis gets intervals and paired tests
    on those.
    """

    name: str
    label: str
    scale: tuple[float, float] = (0.0, 1.0)
    higher_is_better: bool = True
    format: str = ".3f"
    headline: bool = False
    example_score: str = ""
    shown: bool = False  # a column of the report's leaderboard table even if not a headline

    @property
    def in_leaderboard(self) -> bool:
        return self.headline or self.shown


# Every task logs this one too: the share of outputs that could not be parsed at all.
PARSE_FAIL_RATE = Metric("parse_fail_rate", "parse fails", higher_is_better=False, format=".0%", shown=True)


@dataclass(frozen=True)
class Task:
    """A registered task.

    dataset: which record list it reads ("reports" or "series").
    build_example(record) -> Example; parse(raw output) -> Parsed (never raises);
    score(references, parsed) -> TaskScores (a failed parse is scored as wrong).
    include(record) -> bool: whether a record can make an example (e.g. it has an impression).
    constrained: the answer's shape for `--decoding constrained` (None: free text only).
    stop: strings that end free generation early (the closing brace of a JSON answer).
    metrics: what score() logs (besides parse_fail_rate), declared for every consumer;
    headline_metric: the one metric of this task in a run's headline score and a sweep's objective.
    title: how reports and tables name the task.
    """

    name: str
    directive: str
    dataset: Literal["reports", "series"]
    max_new_tokens: int
    build_example: Callable[[Any], Example]
    parse: Callable[[str], Parsed]
    score: Callable[[Sequence[Any], Sequence[Parsed]], TaskScores]
    headline_metric: str
    metrics: tuple[Metric, ...] = ()
    title: str = ""
    include: Callable[[Any], bool] = lambda record: True
    constrained: ConstrainedShape | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name.capitalize())
        names = [m.name for m in self.metrics]
        if self.metrics and self.headline_metric not in names:
            raise ValueError(f"task {self.name!r}: headline_metric {self.headline_metric!r} is not one of its "
                             f"metrics {names}")

    @property
    def reported_metrics(self) -> tuple[Metric, ...]:
        """The declared metrics and parse_fail_rate: a summary table's columns, in order."""
        return (*self.metrics, PARSE_FAIL_RATE)

    def generation_budget(self, cap: int = 0) -> int:
        """New tokens an answer may take: the task's max_new_tokens, capped at `cap` (0 = no cap)."""
        return min(self.max_new_tokens, cap) if cap else self.max_new_tokens

    def metric(self, name: str) -> Metric | None:
        """The declared metric called `name` (parse_fail_rate included), or None."""
        return next((m for m in self.reported_metrics if m.name == name), None)


def make_example(
    task: str, directive: str, record_id: str, text: str, target: str, reference: Any
) -> Example:
    """Build an Example with the shared id scheme (``<task>/<record id>``) and prompt format."""
    return Example(
        id=f"{task}/{record_id}",
        task=task,
        prompt=format_prompt(directive, text),
        target=target,
        reference=reference,
    )


def usable_value(parsed: Parsed) -> Any:
    """The value to score: None for a failed parse, whatever its value (failed means wrong)."""
    return None if parsed.status == "failed" else parsed.value


def check_scoring_inputs(references: Sequence[Any], parsed: Sequence[Parsed]) -> None:
    """Raise ValueError unless there is one parsed output per reference and at least one of each.

    An empty test split is an upstream bug; metrics over nothing would be silently meaningless.
    """
    if len(references) != len(parsed):
        raise ValueError(f"{len(references)} references but {len(parsed)} parsed outputs; need one each")
    if not references:
        raise ValueError("nothing to score: references and parsed outputs are empty")


def status_rate(parsed: Sequence[Parsed], status: ParseStatus) -> float:
    """Fraction of outputs with the given parse status."""
    return sum(p.status == status for p in parsed) / len(parsed)

