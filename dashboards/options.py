"""What a report shows and how it is written: one typed, validated set of options."""

from __future__ import annotations

from dataclasses import dataclass

from dashboards.paper import PAPER_LINE_MODES

# How each figure is also stored alone (report.html always embeds Plotly's JavaScript, once):
#   json   - figures/<name>.json, Plotly's JSON of the figure (a few KB; plotly.io.read_json reopens
#            it): plotly.js is stored once per report folder, in report.html
#   shared - an HTML page per figure plus one plotly.min.js in figures/ (a second copy of the
#            bundle, 4.8 MB), each figure a few KB; renders from a local copy of the
#            folder, but not in the MLflow UI's artifact preview (it shows a blob: page, where a
#            relative script cannot load), so those pages say to open report.html instead.
#   inline - every figure self-contained (about 4.8 MB each); each renders in the MLflow UI too.
FIGURE_JS = ("json", "shared", "inline")
IMPORTANCE_EVALUATORS = ("fanova", "ped-anova", "mdi")


@dataclass(frozen=True)
class ReportOptions:
    """Options of one report; see `python -m dashboards --help` for each one's meaning."""

    paper_lines: str = "auto"
    figure_js: str = "json"
    confusion_run: str = ""  # run id whose confusion matrix shows first (default: the reference)
    examples: int = 3  # example impressions beside their references
    max_bar_runs: int = 10  # runs drawn in the per-label grouped bars (the best by macro F1)
    sweep_studies: tuple[str, ...] = ()  # Optuna study names, besides those found by study tag
    sweep_storage: str = ""  # Optuna storage to load them from, instead of the sweep run's param
    importance: str = "fanova"
    reader_run: str = ""  # a reader-study analysis run id (default: found by study tag)
    title: str = ""

    def __post_init__(self) -> None:
        if self.paper_lines not in PAPER_LINE_MODES:
            raise ValueError(f"--paper-lines must be one of {PAPER_LINE_MODES}, got {self.paper_lines!r}")
        if self.figure_js not in FIGURE_JS:
            raise ValueError(f"--figure-js must be one of {FIGURE_JS}, got {self.figure_js!r}")
        if self.importance not in IMPORTANCE_EVALUATORS:
            raise ValueError(f"--importance must be one of {IMPORTANCE_EVALUATORS}, got {self.importance!r}")
        if self.examples < 0 or self.max_bar_runs < 1:
            raise ValueError("--examples must be >= 0 and --max-bar-runs >= 1")
