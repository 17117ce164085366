"""Run labels and panel titles of the report: readable, unique, and fitting their panels."""
from __future__ import annotations

import pandas as pd

from dashboards.runs import RunCatalog, RunEntry, assign_labels
from dashboards.style import PANEL_CHARACTERS, panel_title


def test_baselines_are_told_apart_by_their_prompting_not_their_run_id():
    runs = [RunEntry("a" * 32, "smollm2-135m", "labeling,harmonization,impression", epoch=2, role="checkpoint"),
            RunEntry("b" * 32, "smollm2-135m", "labeling,harmonization,impression", role="baseline",
                     prompting="zero-shot"),
            RunEntry("c" * 32, "smollm2-135m", "labeling,harmonization,impression", role="baseline",
                     prompting="few-shot")]
    assign_labels(runs)
    labels = [r.label for r in runs]
    assert labels == ["smollm2-135m · e2", "smollm2-135m · baseline · zero-shot", "smollm2-135m · baseline · few-shot"]
    # the same prompting twice: the run id is all that is left to tell them apart
    runs[2].prompting = "zero-shot"
    assign_labels(runs)
    assert runs[1].label.endswith("zero-shot · bbbbbbbb") and runs[2].label.endswith("zero-shot · cccccccc")


def test_the_prompting_column_of_the_analysis_tables_reaches_the_labels():
    table = pd.DataFrame({"run_id": ["x1", "x2"], "model": ["smollm2-135m"] * 2, "role": ["baseline"] * 2,
                          "prompting": ["zero-shot", "prompt-engineered"]})
    catalog = RunCatalog.from_tables({"labeling_summary": table})
    assert catalog.label("x2") == "smollm2-135m · prompt-engineered"


def test_panel_titles_wrap_to_their_share_of_the_width():
    title = "Labeling: macro F1, 14 labels (paper)"
    assert panel_title(title, 1) == title
    lines = panel_title(title, 5).split("<br>")
    assert len(lines) == 2 and " ".join(lines) == title
    assert all(len(line) <= PANEL_CHARACTERS // 5 for line in lines)
