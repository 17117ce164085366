"""The published numbers the report draws as reference lines, and when a run is comparable to them.

Source: the methods and results of the paper this lab reproduces (J Imaging Inform Med, 2026):
multi-task OPT-350m labeling macro F1 0.894 vs prompt-engineered GPT-4o 0.728; harmonization
accuracy 0.975 vs 0.878; impression Likert 4.39 ± 1.00 vs 3.65 ± 1.00 (p = 0.0008).

"The paper's data" per task, detected from a run's ``data`` param (its comma-separated
``kind:path`` sources): labeling and impression used the Open-i reports (``openi-csv``,
``openi-xml``). The paper's MRI series descriptions are an institution's own and not public, so
for harmonization the closest comparable data is a real series table (``series-table``); the
caption says that the sets differ. Synthetic data never gets the lines: its numbers are not
comparable with the paper's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CITATION = "J Imaging Inform Med, 2026"
PAPER_LINE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class Published:
    """One published headline value."""

    task: str
    metric: str
    value: float
    system: str  # who scored it, as the legend shows it


PUBLISHED: tuple[Published, ...] = (
    Published("labeling", "f1_macro", 0.894, "paper: multi-task OPT-350m"),
    Published("labeling", "f1_macro", 0.728, "paper: GPT-4o, prompt-engineered"),
    Published("harmonization", "accuracy", 0.975, "paper: multi-task OPT-350m"),
    Published("harmonization", "accuracy", 0.878, "paper: GPT-4o, prompt-engineered"),
)


@dataclass(frozen=True)
class PublishedLikert:
    system: str
    mean: float
    sd: float


LIKERT: tuple[PublishedLikert, ...] = (
    PublishedLikert("paper: OPT-350m", 4.39, 1.00),
    PublishedLikert("paper: GPT-4o", 3.65, 1.00),
)
LIKERT_P_VALUE = 0.0008

# Source kinds (the part of a data spec before ':') that are the paper's data, per task.
PAPER_DATA_KINDS: dict[str, tuple[str, ...]] = {
    "labeling": ("openi-csv", "openi-xml"),
    "impression": ("openi-csv", "openi-xml"),
    "harmonization": ("series-table",),
}


def source_kinds(data: str) -> set[str]:
    """{'openi-csv', 'series-table'} from 'openi-csv:/d/r.csv,series-table:/d/s.csv?x=1'."""
    kinds = set()
    for spec in data.split(","):
        kind = spec.strip().split("?", 1)[0].split(":", 1)[0].strip()
        if kind:
            kinds.add(kind)
    return kinds


def uses_paper_data(task: str, params: Mapping[str, str]) -> bool:
    """Whether a run's data for `task` is the paper's (see the module docstring)."""
    return bool(source_kinds(params.get("data", "")) & set(PAPER_DATA_KINDS.get(task, ())))


def published_for(task: str, metric: str, mode: str, runs_params: Iterable[Mapping[str, str]]) -> list[Published]:
    """The published values to draw for (task, metric): mode 'auto' draws them when any run shown
    used the paper's data for that task; 'always' and 'never' override the detection."""
    if mode not in PAPER_LINE_MODES:
        raise ValueError(f"paper lines mode must be one of {PAPER_LINE_MODES}, got {mode!r}")
    values = [p for p in PUBLISHED if p.task == task and p.metric == metric]
    if mode == "never" or not values:
        return []
    if mode == "always" or any(uses_paper_data(task, params) for params in runs_params):
        return values
    return []
