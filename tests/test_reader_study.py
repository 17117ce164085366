"""Reader study: export blinded sheets from two logged runs, fill them in code, ingest, check the numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import mlflow
import pytest
from mlflow_fixtures import ALL_TASKS, fresh_store, log_finetune, study_predictions

from analysis import reader_study
from analysis.rating_results import SheetError, ingest_rating_sheets
from analysis.rating_sheets import generated_impression, load_reports_csv, report_context, report_sections

RATERS = ("PK", "JP")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    previous = mlflow.get_tracking_uri()
    folder = tmp_path_factory.mktemp("reader")
    experiment_id = fresh_store(folder, "reader-test")
    ids = {}
    for name, model in (("reference", "smollm2-135m"), ("other", "gpt-4o")):
        predictions = {"impression": study_predictions(name)["impression"]}
        _, children = log_finetune(
            experiment_id, {"model": model, "tasks": ALL_TASKS}, {2: (predictions, {})}, "rs"
        )
        ids[name] = children[2]
    yield {"folder": folder, "experiment_id": experiment_id, **ids}
    mlflow.set_tracking_uri(previous)


def export(two_runs, out: Path, n: int = 2, seed: int = 7) -> int:
    return reader_study.main(
        [
            "export",
            "--run-a",
            two_runs["reference"],
            "--run-b",
            two_runs["other"],
            "--n",
            str(n),
            "--seed",
            str(seed),
            "--raters",
            ",".join(RATERS),
            "--output",
            str(out),
            "--cache-dir",
            str(two_runs["folder"] / "cache"),
        ]
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def exported(two_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert export(two_runs, out) == 0
    return out


# ---------------------------------------------------------------- export


def test_export_writes_a_blinded_shuffled_sheet_and_a_separate_key(two_runs, exported):
    rows = read_csv(exported / "rating_sheet.csv")
    assert list(rows[0]) == ["item", "indication", "findings", "impression", "score_PK", "score_JP"]
    assert len(rows) == 4 and all(r["score_PK"] == r["score_JP"] == "" for r in rows)
    key = json.loads((exported / "key.json").read_text())
    assert [m["run_id"] for m in key["models"]] == [two_runs["reference"], two_runs["other"]]
    assert [m["label"] for m in key["models"]] == ["smollm2-135m", "gpt-4o"]
    sources = [e["run_id"] for e in key["items"]]
    assert sources.count(two_runs["reference"]) == sources.count(two_runs["other"]) == 2
    assert len({e["example_id"] for e in key["items"]}) == 4  # the two samples use different reports
    for text in ((exported / "rating_sheet.csv").read_text(), (exported / "rating_sheet.html").read_text()):
        for secret in (two_runs["reference"], two_runs["other"], "smollm2", "gpt-4o"):
            assert secret not in text
    # each row shows its report's indication and findings and the run's impression
    by_item = {e["item"]: e for e in key["items"]}
    for row in rows:
        case = by_item[row["item"]]["example_id"].removeprefix("impression/r")
        assert row["indication"] == f"cough {case}"
        assert row["findings"] == f"lungs are clear in case {case}."
        assert row["impression"].endswith(f"case {case}") and not row["impression"].startswith("IMPRESSION")


def test_export_is_reproducible_from_its_seed(two_runs, exported, tmp_path):
    assert export(two_runs, tmp_path / "again") == 0
    assert (tmp_path / "again" / "rating_sheet.csv").read_text() == (
        exported / "rating_sheet.csv"
    ).read_text()
    assert (tmp_path / "again" / "key.json").read_text() == (exported / "key.json").read_text()


def test_export_refuses_a_sample_larger_than_the_test_set(two_runs, tmp_path, capsys):
    assert export(two_runs, tmp_path / "big", n=6) == 1  # 10 reports cannot give 2 x 6 distinct ones
    assert "fewer than the 6 requested" in capsys.readouterr().err


def test_report_text_from_input_or_a_reports_csv(tmp_path):
    assert report_sections("COMPARISON: none\nINDICATION: fever\nFINDINGS: left base\nopacity.") == {
        "comparison": "none",
        "indication": "fever",
        "findings": "left base\nopacity.",
    }
    record = {"id": "impression/r7", "parsed": "IMPRESSION: pneumonia.", "output": "IMPRESSION: pneumonia."}
    with pytest.raises(ValueError, match="--reports-csv"):
        report_context(record, None)
    path = tmp_path / "reports.csv"
    path.write_text("id,indication,findings\nr7,fever,left base opacity\n")
    assert report_context(record, load_reports_csv(path)) == {
        "indication": "fever",
        "findings": "left base opacity",
    }
    assert generated_impression(record) == "pneumonia."
    assert generated_impression({"parsed": None, "output": "  garbled text "}) == "garbled text"


# ---------------------------------------------------------------- ingest


def fill(exported: Path, folder: Path) -> list[Path]:
    """Each rater fills a copy. Score pairs (PK, JP): model A items (4, 4), (3, 4); B items (1, 1), (2, 2)."""
    key = json.loads((exported / "key.json").read_text())
    label_a = key["models"][0]["label"]
    plan = {True: [(4, 4), (3, 4)], False: [(1, 1), (2, 2)]}
    model_of = {e["item"]: e["model"] for e in key["items"]}
    rows = read_csv(exported / "rating_sheet.csv")
    scores = {}
    for is_a in (True, False):
        items = sorted(r["item"] for r in rows if (model_of[r["item"]] == label_a) == is_a)
        scores.update(dict(zip(items, plan[is_a], strict=True)))
    paths = []
    for index, rater in enumerate(RATERS):
        filled = [{**r, f"score_{rater}": str(scores[r["item"]][index])} for r in rows]
        paths.append(write_csv(folder / f"{rater}.csv", filled))
    return paths


def test_ingest_reports_the_hand_computed_statistics(exported, two_runs, tmp_path, capsys):
    sheets = fill(exported, tmp_path)
    out = tmp_path / "results"
    argv = [
        "ingest",
        "--key",
        str(exported / "key.json"),
        "--sheets",
        *map(str, sheets),
        "--output",
        str(out),
    ]
    assert reader_study.main(argv) == 0
    summary = {r["model"]: r for r in read_csv(out / "reader_summary.csv")}
    # A ratings 4, 4, 3, 4 -> mean 3.75, SD 0.5; B ratings 1, 1, 2, 2 -> mean 1.5, SD sqrt(1/3).
    assert float(summary["smollm2-135m"]["mean"]) == pytest.approx(3.75)
    assert float(summary["smollm2-135m"]["sd"]) == pytest.approx(0.5)
    assert float(summary["gpt-4o"]["mean"]) == pytest.approx(1.5)
    assert float(summary["gpt-4o"]["sd"]) == pytest.approx(math.sqrt(1 / 3))
    distribution = {
        (r["model"], int(r["score"])): int(r["count"]) for r in read_csv(out / "reader_distribution.csv")
    }
    assert distribution[("smollm2-135m", 4)] == 3 and distribution[("gpt-4o", 5)] == 0
    # Item means: A (4, 3.5), B (1, 2). Pooled variance (0.125 + 0.5) / 2, SE = sqrt(0.3125), df = 2,
    # t = (1.5 - 3.75) / SE; with 2 df the two-sided p is 1 - |t| / sqrt(2 + t^2).
    t = -2.25 / math.sqrt(0.3125)
    ttest = read_csv(out / "reader_ttest.csv")[0]
    assert float(ttest["statistic"]) == pytest.approx(t)
    assert float(ttest["p_value"]) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert ttest["unit"] == "item" and float(ttest["df"]) == 2
    # Rating pairs (1,1), (2,2), (3,4), (4,4): the hand example of test_analysis_stats, kappa 11/12.
    kappa = read_csv(out / "reader_kappa.csv")[0]
    assert float(kappa["kappa_quadratic"]) == pytest.approx(11 / 12)
    assert float(kappa["exact_agreement"]) == pytest.approx(0.75)

    runs = mlflow.search_runs([two_runs["experiment_id"]], "tags.role = 'analysis'", output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["analysis"] == "reader_study" and run.data.tags["study"] == "rs"
    assert run.data.metrics["model_a/mean"] == pytest.approx(3.75)
    assert run.data.metrics["kappa_quadratic"] == pytest.approx(11 / 12)
    assert run.data.params["analysis.model_b"] == "gpt-4o"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"reader_summary.csv", "reader_kappa.json", "inputs"} <= artifacts


def test_ingest_by_rating_unit_and_one_combined_sheet(exported, tmp_path):
    pk, jp = (read_csv(p) for p in fill(exported, tmp_path))
    combined = write_csv(
        tmp_path / "both.csv", [{**a, "score_JP": b["score_JP"]} for a, b in zip(pk, jp, strict=True)]
    )
    tables, metrics, _ = ingest_rating_sheets(exported / "key.json", [combined], unit="rating")
    ttest = tables["reader_ttest"].iloc[0]
    assert (ttest["n_a"], ttest["n_b"], ttest["df"]) == (4, 4, 6)
    assert metrics["model_b/mean"] == pytest.approx(1.5)


MALFORMED = {
    "not an integer": (
        lambda rows: rows[1].update(score_PK="3.5"),
        r"line 3, column score_PK: '3.5' is not an integer",
    ),
    "out of range": (
        lambda rows: rows[0].update(score_PK="6"),
        r"line 2, column score_PK: '6' is not an integer from 1",
    ),
    "not a number": (
        lambda rows: rows[2].update(score_PK="good"),
        r"line 4, column score_PK: 'good' is not a number",
    ),
    "missing score": (lambda rows: rows[3].update(score_PK=""), r"line 5, column score_PK: missing score"),
    "unknown item": (
        lambda rows: rows[0].update(item="item-9"),
        r"line 2, column item: 'item-9' is not an item",
    ),
    "repeated item": (
        lambda rows: rows[1].update(item=rows[0]["item"]),
        r"line 3, column item: .* repeats line 2",
    ),
    "missing item": (lambda rows: rows.pop(), r"1 item\(s\) of the key are missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_sheets_name_file_line_and_column(exported, tmp_path, case):
    pk_path, jp_path = fill(exported, tmp_path)
    rows = read_csv(pk_path)
    change, message = MALFORMED[case]
    change(rows)
    write_csv(pk_path, rows)
    with pytest.raises(SheetError, match=message) as error:
        ingest_rating_sheets(exported / "key.json", [pk_path, jp_path])
    assert "PK.csv" in str(error.value)


def test_one_rater_is_not_enough(exported, tmp_path):
    pk_path, _ = fill(exported, tmp_path)
    with pytest.raises(SheetError, match=r"at least two raters, found \['PK'\]"):
        ingest_rating_sheets(exported / "key.json", [pk_path])


def test_a_rater_filled_twice_is_refused(exported, tmp_path):
    pk_path, jp_path = fill(exported, tmp_path)
    copy = tmp_path / "PK-again.csv"
    copy.write_text(pk_path.read_text())
    with pytest.raises(SheetError, match="rater 'PK' has scores in both"):
        ingest_rating_sheets(exported / "key.json", [pk_path, jp_path, copy])


def test_cli_reports_sheet_errors_without_a_traceback(exported, tmp_path, capsys):
    pk_path, _ = fill(exported, tmp_path)
    argv = ["ingest", "--key", str(exported / "key.json"), "--sheets", str(pk_path), "--no-log"]
    assert reader_study.main(argv) == 1
    assert capsys.readouterr().err.startswith("error: need filled scores from at least two raters")


def test_three_raters_give_pairwise_kappas(exported, tmp_path):
    pk, jp = (read_csv(p) for p in fill(exported, tmp_path))
    # a third rater who always agrees with PK, in a column added to a combined sheet
    rows = [{**a, "score_JP": b["score_JP"], "score_AB": a["score_PK"]} for a, b in zip(pk, jp, strict=True)]
    tables, metrics, _ = ingest_rating_sheets(
        exported / "key.json", [write_csv(tmp_path / "three.csv", rows)]
    )
    kappa = {
        (r["rater_a"], r["rater_b"]): r["kappa_quadratic"] for r in tables["reader_kappa"].to_dict("records")
    }
    assert kappa == {
        ("AB", "JP"): pytest.approx(11 / 12),
        ("AB", "PK"): 1.0,
        ("JP", "PK"): pytest.approx(11 / 12),
    }
    assert "kappa_quadratic" not in metrics and metrics["kappa_quadratic/mean"] == pytest.approx(
        (2 * 11 / 12 + 1) / 3
    )


def test_one_entry_point_can_pass_every_flag(exported, tmp_path, capsys):
    # how an MLproject entry point calls it: every flag present, unused ones empty, sheets comma-separated
    pk_path, jp_path = fill(exported, tmp_path)
    common = ["--run-a", "", "--run-b", "", "--labels", "", "--reports-csv", "", "--log-experiment", ""]
    sheets = f"{pk_path},{jp_path}"
    argv = [
        "ingest",
        *common,
        "--key",
        str(exported / "key.json"),
        "--sheets",
        sheets,
        "--output",
        str(tmp_path / "o"),
    ]
    assert reader_study.main([*argv, "--no-log"]) == 0
    assert (tmp_path / "o" / "reader_kappa.csv").exists()
    assert reader_study.main(["export", *common, "--key", "", "--sheets", ""]) == 1
    assert "export needs --run-a and --run-b" in capsys.readouterr().err
