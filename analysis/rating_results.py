"""Reader study, ingest side: validate filled rating sheets against the key and compute the statistics.

Sheets: any number of CSV files shaped like ``rating_sheet.csv``. In each file a ``score_<rater>``
column is either blank throughout (that rater filled another copy) or complete; every rater must
be filled in exactly one file, and at least two raters are needed. Scores are integers 1-5.

Statistics: per model, mean ± SD (sample SD) over all ratings and the 1-5 distribution; an unpaired
two-tailed t-test between the models on the chosen unit (``item``: each item's mean over raters,
the default, since the raters' scores of one item are not independent; ``rating``: every rating);
Cohen's kappa with quadratic weights for every pair of raters.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.outputs import ensure_experiment, log_analysis_run, write_tables
from analysis.rating_sheets import LIKERT, SCORE_PREFIX
from analysis.stats import DEFAULT_ALPHA, quadratic_weighted_kappa, unpaired_t_test

UNITS = ("item", "rating")


class SheetError(ValueError):
    """A rating sheet that cannot be used; the message names the file, line and column."""


def read_key(path: Path) -> dict[str, Any]:
    """The key written at export (models, items); checked for the fields ingest needs."""
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SheetError(f"{path}: cannot read the key file: {err}") from None
    if not isinstance(key, dict) or not key.get("items") or len(key.get("models", [])) != 2:
        raise SheetError(f"{path}: not a reader-study key (needs 'models' with two entries and 'items')")
    return key


def read_sheets(paths: list[Path], items: list[str]) -> dict[str, dict[str, int]]:
    """Scores by rater and item from the filled sheets; any problem raises SheetError."""
    scores: dict[str, dict[str, int]] = {}
    source: dict[str, Path] = {}
    for path in paths:
        for rater, rater_scores in _read_one_sheet(path, items).items():
            if rater in scores:
                raise SheetError(f"rater {rater!r} has scores in both {source[rater]} and {path}")
            scores[rater], source[rater] = rater_scores, path
    if len(scores) < 2:
        raise SheetError(
            f"need filled scores from at least two raters, found {sorted(scores) or 'none'} in "
            f"{[str(p) for p in paths]} (each rater fills the {SCORE_PREFIX}<name> column)"
        )
    return scores


def _read_one_sheet(path: Path, items: list[str]) -> dict[str, dict[str, int]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel writes a BOM
            reader = csv.DictReader(handle)
            columns = [c for c in reader.fieldnames or () if c and c.startswith(SCORE_PREFIX)]
            rows = list(reader)
    except OSError as err:
        raise SheetError(f"{path}: cannot read: {err}") from None
    if "item" not in (reader.fieldnames or ()):
        raise SheetError(f"{path}: no 'item' column; use the rating_sheet.csv written by export")
    if not columns:
        raise SheetError(f"{path}: no {SCORE_PREFIX}<rater> column")
    # line numbers as a spreadsheet shows them: the header is line 1
    lines = {}
    for line, row in enumerate(rows, 2):
        item = (row.get("item") or "").strip()
        if item not in items:
            raise SheetError(f"{path}: line {line}, column item: {item!r} is not an item of the key")
        if item in lines:
            raise SheetError(f"{path}: line {line}, column item: {item!r} repeats line {lines[item]}")
        lines[item] = line
    missing = [i for i in items if i not in lines]
    if missing:
        raise SheetError(f"{path}: {len(missing)} item(s) of the key are missing, e.g. {missing[:5]}")
    out = {}
    for column in columns:
        cells = [
            (
                lines[(r.get("item") or "").strip()],
                (r.get("item") or "").strip(),
                (r.get(column) or "").strip(),
            )
            for r in rows
        ]
        if all(not value for _, _, value in cells):
            continue  # this rater's column is blank here: another copy of the sheet holds it
        out[column[len(SCORE_PREFIX) :]] = {
            item: _score(path, line, column, value) for line, item, value in cells
        }
    return out


def _score(path: Path, line: int, column: str, value: str) -> int:
    where = f"{path}: line {line}, column {column}"
    if not value:
        raise SheetError(f"{where}: missing score (every item needs an integer 1-5)")
    try:
        number = float(value)
    except ValueError:
        raise SheetError(f"{where}: {value!r} is not a number; use an integer 1-5") from None
    if not number.is_integer() or int(number) not in LIKERT:
        raise SheetError(f"{where}: {value!r} is not an integer from 1 to 5")
    return int(number)


def ratings_frame(scores: Mapping[str, Mapping[str, int]], key: Mapping[str, Any]) -> pd.DataFrame:
    """Long table: item, model, run_id, example_id, rater, score."""
    entries = {e["item"]: e for e in key["items"]}
    rows = [
        {
            "item": item,
            "model": entries[item]["model"],
            "run_id": entries[item]["run_id"],
            "example_id": entries[item]["example_id"],
            "rater": rater,
            "score": score,
        }
        for rater, by_item in scores.items()
        for item, score in by_item.items()
    ]
    return pd.DataFrame(rows).sort_values(["item", "rater"], ignore_index=True)


def reader_tables(ratings: pd.DataFrame, labels: list[str], unit: str = "item") -> dict[str, pd.DataFrame]:
    """reader_summary, reader_distribution, reader_ttest and reader_kappa from the long ratings."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    summary, distribution, samples = [], [], {}
    for label in labels:
        scores = ratings.loc[ratings["model"] == label, "score"]
        item_means = ratings[ratings["model"] == label].groupby("item")["score"].mean()
        samples[label] = item_means.to_numpy() if unit == "item" else scores.to_numpy()
        summary.append(
            {
                "model": label,
                "n_items": int(item_means.size),
                "n_ratings": int(scores.size),
                "mean": float(scores.mean()),
                "sd": float(scores.std(ddof=1)) if scores.size > 1 else math.nan,
                "item_mean_sd": float(item_means.std(ddof=1)) if item_means.size > 1 else math.nan,
            }
        )
        distribution += [
            {
                "model": label,
                "score": s,
                "count": int((scores == s).sum()),
                "share": float((scores == s).mean()) if scores.size else math.nan,
            }
            for s in LIKERT
        ]
    test = unpaired_t_test(samples[labels[0]], samples[labels[1]])
    ttest = {
        "model_a": labels[0],
        "model_b": labels[1],
        "unit": unit,
        "n_a": len(samples[labels[0]]),
        "n_b": len(samples[labels[1]]),
        "mean_diff_b_minus_a": float(np.mean(samples[labels[1]]) - np.mean(samples[labels[0]])),
        "test": test.test,
        "statistic": test.statistic,
        "df": test.df,
        "p_value": test.p_value,
    }
    wide = ratings.pivot(index="item", columns="rater", values="score")
    kappa = [
        {
            "rater_a": a,
            "rater_b": b,
            "n_items": int(len(wide)),
            "kappa_quadratic": quadratic_weighted_kappa(wide[a].tolist(), wide[b].tolist(), LIKERT),
            "exact_agreement": float((wide[a] == wide[b]).mean()),
        }
        for a, b in itertools.combinations(sorted(wide.columns), 2)
    ]
    return {
        "reader_ratings": ratings,
        "reader_summary": pd.DataFrame(summary),
        "reader_distribution": pd.DataFrame(distribution),
        "reader_ttest": pd.DataFrame([ttest]),
        "reader_kappa": pd.DataFrame(kappa),
    }


def reader_metrics(tables: Mapping[str, pd.DataFrame], alpha: float = DEFAULT_ALPHA) -> dict[str, float]:
    """Headline numbers for MLflow; models are ``model_a`` / ``model_b`` (labels go in params)."""
    metrics: dict[str, float] = {}
    for side, row in zip(("model_a", "model_b"), tables["reader_summary"].to_dict("records"), strict=True):
        metrics[f"{side}/mean"], metrics[f"{side}/sd"] = row["mean"], row["sd"]
    ttest = tables["reader_ttest"].iloc[0]
    metrics["ttest/statistic"], metrics["ttest/p_value"] = ttest["statistic"], ttest["p_value"]
    metrics["ttest/significant"] = float(ttest["p_value"] < alpha)
    kappas = tables["reader_kappa"]["kappa_quadratic"]
    metrics["kappa_quadratic/mean"] = float(kappas.mean())
    if len(kappas) == 1:
        metrics["kappa_quadratic"] = float(kappas.iloc[0])
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def ingest_rating_sheets(
    key_path: Path, sheet_paths: list[Path], unit: str = "item", alpha: float = DEFAULT_ALPHA
) -> tuple[dict[str, pd.DataFrame], dict[str, float], dict[str, Any]]:
    """Validate the sheets against the key; return (tables, headline metrics, key)."""
    key = read_key(key_path)
    items = [e["item"] for e in key["items"]]
    scores = read_sheets(sheet_paths, items)
    labels = [m["label"] for m in key["models"]]
    tables = reader_tables(ratings_frame(scores, key), labels, unit)
    return tables, reader_metrics(tables, alpha), key


def publish_reader_study(
    tables: Mapping[str, pd.DataFrame],
    metrics: Mapping[str, float],
    key: Mapping[str, Any],
    inputs: list[Path],
    out_dir: Path,
    log_to_mlflow: bool = True,
    experiment: str | None = None,
) -> str | None:
    """Write the tables and a copy of the key and sheets (the study is unblinded now); log the run.

    The analysis run goes to `experiment` (created if needed), else to the first model's experiment,
    with that run's study tag. Returns the run id, or None when nothing was logged.
    """
    copies = out_dir / "inputs"
    copies.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(inputs):
        (copies / f"{index}-{path.name}").write_bytes(path.read_bytes())
    models = key["models"]
    params = {
        **{f"model_{side}": m["label"] for side, m in zip("ab", models, strict=True)},
        **{f"run_{side}": m["run_id"] for side, m in zip("ab", models, strict=True)},
        "unit": str(tables["reader_ttest"]["unit"].iloc[0]),
        "raters": ",".join(sorted(tables["reader_ratings"]["rater"].unique())),
        "n_items": str(len(key["items"])),
        "seed": str(key.get("seed", "")),
    }
    write_tables(tables, out_dir, {"params": params, "metrics": dict(metrics)})
    if not log_to_mlflow:
        return None
    experiment_id = ensure_experiment(experiment) if experiment else models[0].get("experiment_id")
    study = models[0].get("study") or None
    return log_analysis_run(out_dir, metrics, params, experiment_id, study, "reader_study")
