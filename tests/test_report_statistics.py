"""What the report says about its statistics: n in every caption of the analysis sections, both
macro-F1 variants with bootstrap intervals, the paired macro-F1 test, unadjusted beside Holm.

Reads the report that tests/test_report.py builds once per process (its `built` fixture)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from mlflow_fixtures import N_REPORTS, N_SERIES, SLEEP_DIFFERENCES
from test_report import built, figures_by_id  # noqa: F401  (the session fixture and its reader)

from dashboards.inputs import ReportInputs, read_tables
from dashboards.options import ReportOptions
from dashboards.runs import RunCatalog
from dashboards.sections import ReportContext

ANALYSIS_SECTIONS = ("leaderboard", "labeling", "harmonization", "impression", "trajectory", "poisoning")
SIZES = {
    "labeling": f"{N_REPORTS} test reports",
    "harmonization": f"{N_SERIES} test series descriptions",
    "impression": f"{len(SLEEP_DIFFERENCES)} test reports",
}


def tables(built) -> dict[str, pd.DataFrame]:  # noqa: F811
    out = built["folder"] / "out" / "analysis"
    return {name: pd.read_csv(out / f"{name}.csv") for name in ("labeling_summary", "labeling_f1_macro_tests")}


def test_every_analysis_caption_states_the_test_set_sizes(built):  # noqa: F811
    for section in built["result"].report.sections:
        if section.key not in ANALYSIS_SECTIONS:
            continue
        for fig in section.figures:
            if fig.div_id.endswith("training_loss"):
                continue  # training loss: no test examples
            sizes = re.findall(r"\d+ test (?:reports|series descriptions)", fig.caption)
            assert sizes and set(sizes) <= set(SIZES.values()), f"{fig.div_id}: {fig.caption}"
            assert "n = " in fig.caption


def test_leaderboard_shows_both_macro_f1_variants_with_bootstrap_intervals(built):  # noqa: F811
    html = built["html"]
    table = html[html.index('<table class="sortable leaderboard">') :]
    table, caption = table[: table.index("</table>")], table[table.index('<p class="caption">') :]
    assert "Labeling macro F1, 14 labels (paper) [CI]" in table and "Labeling macro F1, labels present [CI]" in table
    summary = tables(built)["labeling_summary"]
    reference = summary[summary["is_reference"]].iloc[0]
    for column in ("f1_macro", "f1_macro_supported"):
        low, high = reference[f"{column}_boot_low"], reference[f"{column}_boot_high"]
        assert f'<span class="ci">[{low:.3f}, {high:.3f}]</span>' in table, column
    assert f"n = {SIZES['labeling']} (labeling)" in caption
    assert "percentile bootstrap intervals (2000 resamples of the test examples, seed" in caption


def test_labeling_section_reports_the_paired_macro_f1_test_and_both_corrections(built):  # noqa: F811
    html = built["html"]
    block = html[html.index('<table class="tests">') :]
    block = block[: block.index("</p>")]
    tests = tables(built)["labeling_f1_macro_tests"]
    assert set(tests["metric"]) == {"f1_macro", "f1_macro_supported"}
    # the bootstrap's seed has a column of its own: "seed" stays the run's (the report labels runs by it)
    summary = tables(built)["labeling_summary"].set_index("run_id")
    assert (tests["boot_seed"] == summary["boot_seed"].iloc[0]).all()
    assert [str(s) for s in tests["seed"]] == [str(summary.loc[r, "seed"]) for r in tests["run_id"]]
    for row in tests.to_dict("records"):
        assert f'{row["diff"]:+.3f} <span class="ci">[{row["ci_low"]:.3f}, {row["ci_high"]:.3f}]</span>' in block
    # the fixture's analysis uses Holm: Edema is significant both unadjusted and Holm-adjusted
    assert "In use for ★ and the heatmap: Holm-adjusted p-values." in block
    assert "before and after Holm&#x27;s correction" in block or "before and after Holm's correction" in block


def test_degenerate_t_tests_say_why_in_the_hover(built):  # noqa: F811
    # ROUGE scores of the two runs are identical: the paired t-test is 0/0, shown as "p n/a" with its reason.
    fig = figures_by_id(built)["fig-impression-paired_differences"].figure
    rouge = [t for t in fig.data if t.xaxis not in (None, "x") and str(t.y[0]).startswith("opt-350m")]
    assert rouge and all(t.text[0].startswith("p n/a") for t in rouge)
    assert all("every difference is 0" in t.customdata[0][12] for t in rouge)


@pytest.mark.parametrize("task", ["labeling", "harmonization", "impression"])
def test_test_sizes_come_from_the_summaries(built, task):  # noqa: F811
    frames, summary = read_tables(built["folder"] / "out" / "analysis")
    ctx = ReportContext(ReportInputs(frames, summary), ReportOptions(), RunCatalog([]))
    assert ctx.test_size(task) == SIZES[task]
