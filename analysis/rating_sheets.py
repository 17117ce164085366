"""Reader study, export side: a blinded, shuffled rating sheet of impressions from two runs.

N impressions are sampled from each run (seeded; the two samples use different reports, so no
rater sees two versions of one report side by side), their source is hidden, the order shuffled.
Raters get ``rating_sheet.csv`` / ``rating_sheet.html`` (indication, findings, generated impression,
one 1-5 column per rater); ``key.json``, which maps items back to runs, stays with the organizer.

The report text comes from the impression predictions' ``input`` field (the report without its
impression) or, for runs logged before that field existed, from a CSV with columns
``id, indication, findings``.
"""

from __future__ import annotations

import csv
import html
import json
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.runs import PredictionStore, RunInfo, get_run

LIKERT: tuple[int, ...] = (1, 2, 3, 4, 5)
SCORE_PREFIX = "score_"
SHEET_COLUMNS: tuple[str, ...] = ("item", "indication", "findings", "impression")
ANCHORS = {
    5: "clear, concise impression that reflects the findings accurately",
    1: "unacceptable: findings missing, wrong or misleading",
}
_SECTION = re.compile(r"^\s*(COMPARISON|INDICATION|FINDINGS|IMPRESSION)\s*:\s*", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SheetItem:
    """One row the raters see."""

    item: str
    indication: str
    findings: str
    impression: str


@dataclass(frozen=True)
class KeyEntry:
    """Which model and run an item came from (never shown to raters)."""

    item: str
    model: str
    run_id: str
    example_id: str


def report_sections(text: str) -> dict[str, str]:
    """``{"indication": ..., "findings": ...}`` from report text written as ``HEADER: text`` sections."""
    sections: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        sections[match.group(1).lower()] = text[match.end() : end].strip()
    return sections


def load_reports_csv(path: Path) -> dict[str, dict[str, str]]:
    """Report sections by record id from a CSV with columns id, findings and (optionally) indication."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "findings"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: reports CSV lacks column(s) {sorted(missing)}; needs id, findings[, indication]"
            )
        return {
            row["id"].strip(): {
                "indication": (row.get("indication") or "").strip(),
                "findings": row["findings"].strip(),
            }
            for row in reader
        }


def report_context(
    record: Mapping[str, Any], reports: Mapping[str, Mapping[str, str]] | None
) -> dict[str, str]:
    """Indication and findings for one impression example (from ``input``, else the reports CSV)."""
    if isinstance(record.get("input"), str):
        sections = report_sections(record["input"])
        if not sections:  # no headers: the whole input is the findings
            sections = {"findings": record["input"].strip()}
    else:
        example_id = str(record.get("id", ""))
        sections = dict(
            (reports or {}).get(example_id) or (reports or {}).get(example_id.split("/", 1)[-1]) or {}
        )
        if not sections:
            raise ValueError(
                f"impression example {example_id!r} has no 'input' field and is not in the reports CSV: "
                "pass --reports-csv with columns id, indication, findings"
            )
    return {"indication": sections.get("indication", ""), "findings": sections.get("findings", "")}


def generated_impression(record: Mapping[str, Any]) -> str:
    """What the model wrote: the parsed impression, else the raw output, without an IMPRESSION: header.

    The header is removed from every item alike, so its presence cannot reveal the model.
    """
    text = record.get("parsed") if isinstance(record.get("parsed"), str) else str(record.get("output") or "")
    header = _SECTION.match(text)
    if header and header.group(1).upper() == "IMPRESSION":
        text = text[header.end() :]
    return text.strip()


def model_labels(run_a: RunInfo, run_b: RunInfo, labels: tuple[str, str] | None = None) -> tuple[str, str]:
    """Names for the two runs in the key: given ones, else their model params (made distinct)."""
    if labels:
        if labels[0] == labels[1]:
            raise ValueError(f"the two model labels must differ, got {labels}")
        return labels
    a, b = run_a.model or run_a.run_id, run_b.model or run_b.run_id
    return (a, b) if a != b else (f"{a}#{run_a.run_id[:8]}", f"{b}#{run_b.run_id[:8]}")


def build_rating_set(
    records: tuple[Mapping[str, dict[str, Any]], Mapping[str, dict[str, Any]]],
    run_ids: tuple[str, str],
    labels: tuple[str, str],
    n: int,
    seed: int,
    reports: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[list[SheetItem], list[KeyEntry]]:
    """Sample n examples per run (distinct reports across the two), hide the source, shuffle."""
    rng = random.Random(seed)
    picks: list[tuple[int, str]] = []
    taken: set[str] = set()
    for side, run_records in enumerate(records):
        pool = sorted(set(run_records) - taken)
        if len(pool) < n:
            raise ValueError(
                f"run {run_ids[side]} has {len(pool)} impression examples not already sampled, fewer than "
                f"the {n} requested (the two samples use different reports); lower --n"
            )
        chosen = rng.sample(pool, n)
        taken |= set(chosen)
        picks += [(side, example_id) for example_id in chosen]
    rng.shuffle(picks)
    width = len(str(len(picks)))
    items, key = [], []
    for number, (side, example_id) in enumerate(picks, 1):
        record = records[side][example_id]
        item = f"item-{number:0{width}d}"
        items.append(
            SheetItem(item, **report_context(record, reports), impression=generated_impression(record))
        )
        key.append(KeyEntry(item, labels[side], run_ids[side], example_id))
    return items, key


def write_sheet_csv(items: list[SheetItem], raters: list[str], path: Path) -> Path:
    """The rating sheet: item text plus one empty ``score_<rater>`` column per rater."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*SHEET_COLUMNS, *(SCORE_PREFIX + r for r in raters)])
        for item in items:
            writer.writerow([*(getattr(item, c) for c in SHEET_COLUMNS), *([""] * len(raters))])
    return path


def write_sheet_html(items: list[SheetItem], raters: list[str], path: Path) -> Path:
    """A printable page: one block per item, with a 1-5 box row per rater."""
    esc = html.escape
    boxes = " ".join(f"<span class=box>{s}</span>" for s in LIKERT)
    blocks = []
    for item in items:
        scores = "".join(f"<tr><th>{esc(r)}</th><td>{boxes}</td></tr>" for r in raters)
        blocks.append(
            f"<section><h2>{esc(item.item)}</h2><p><b>Indication:</b> {esc(item.indication) or '&mdash;'}</p>"
            f"<p><b>Findings:</b> {esc(item.findings)}</p>"
            f"<p class=imp><b>Impression:</b> {esc(item.impression)}</p>"
            f"<table>{scores}</table></section>"
        )
    anchors = "; ".join(f"{k} = {v}" for k, v in sorted(ANCHORS.items(), reverse=True))
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>Impression rating sheet</title><style>"
        "body{font-family:sans-serif;max-width:48em;margin:auto}section{border-top:1px solid #888;"
        "page-break-inside:avoid;padding:.4em 0}.imp{background:#f3f3f3;padding:.3em}"
        ".box{display:inline-block;border:1px solid #000;width:1.6em;text-align:center;margin-right:.4em}"
        "</style></head><body><h1>Impression rating sheet</h1>"
        f"<p>Rate each impression from 1 to 5 ({esc(anchors)}). Circle one score per rater, or enter it in "
        f"your column of rating_sheet.csv.</p>{''.join(blocks)}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def write_key(key: list[KeyEntry], meta: Mapping[str, Any], path: Path) -> Path:
    """The unblinding key: export settings, the two runs, and item -> (model, run, example id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "items": [asdict(k) for k in key]}, indent=1), encoding="utf-8")
    return path


@dataclass(frozen=True)
class ExportConfig:
    """What `export_rating_sheets` needs; `key_path` defaults to ``<out_dir>/key.json``."""

    run_a: str
    run_b: str
    out_dir: Path
    n: int = 50
    seed: int = 0
    raters: tuple[str, ...] = ("rater1", "rater2")
    labels: tuple[str, str] | None = None
    reports_csv: Path | None = None
    key_path: Path | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be at least 1, got {self.n}")
        if len(self.raters) < 2 or len(set(self.raters)) != len(self.raters):
            raise ValueError(f"give at least two distinct rater names, got {list(self.raters)}")
        bad = [r for r in self.raters if not re.fullmatch(r"[\w.-]+", r)]
        if bad:
            raise ValueError(f"rater names may hold letters, digits, '_', '.', '-' only: {bad}")


def export_rating_sheets(config: ExportConfig, store: PredictionStore) -> dict[str, Path]:
    """Sample, blind and write the sheet (CSV + HTML) and the key; returns the paths written."""
    runs = get_run(config.run_a, store.client), get_run(config.run_b, store.client)
    records = []
    for run in runs:
        loaded = store.load(run.run_id, "impression")
        if not loaded:
            raise ValueError(f"run {run.run_id} has no predictions/impression.jsonl to sample from")
        records.append(loaded)
    labels = model_labels(*runs, config.labels)
    reports = load_reports_csv(config.reports_csv) if config.reports_csv else None
    items, key = build_rating_set(
        (records[0], records[1]), (runs[0].run_id, runs[1].run_id), labels, config.n, config.seed, reports
    )
    config.out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "seed": config.seed,
        "n_per_model": config.n,
        "raters": list(config.raters),
        "models": [
            {
                "label": label,
                "run_id": run.run_id,
                "experiment_id": run.experiment_id,
                "study": run.study,
                "model": run.model,
                "tasks": ",".join(run.tasks),
                "epoch": run.epoch,
            }
            for label, run in zip(labels, runs, strict=True)
        ],
    }
    return {
        "sheet_csv": write_sheet_csv(items, list(config.raters), config.out_dir / "rating_sheet.csv"),
        "sheet_html": write_sheet_html(items, list(config.raters), config.out_dir / "rating_sheet.html"),
        "key": write_key(key, meta, config.key_path or config.out_dir / "key.json"),
    }
