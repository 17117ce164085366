"""The `labeled-csv` data source: a radiologist-labeled report table, as the paper used.

A CSV (or TSV, or an XLSX sheet with ``#Sheet``) with one row per report:

    id, report, No Finding, Enlarged Cardiomediastinum, Cardiomegaly, ..., Support Devices

- `id` and `report` columns: options ``id=`` and ``text=`` name others;
- the labels: one column per CheXpert label (13 required; "No Finding" optional and re-derived;
  header case, spaces and punctuation ignored), with values Yes/No, 1/0, true/false or CheXpert's
  1/0/-1/blank read under the ``uncertain=`` / ``blank=`` policy (pipelines/data/labels.py);
  or, with ``labels=<file.json|file.jsonl|folder>``, the labels of each report id from JSON and no
  label columns needed;
- the report text is split into COMPARISON / INDICATION / FINDINGS / IMPRESSION at its section
  headers (`split_sections`); text with no header, and text before the first header, count as
  FINDINGS.

A report without IMPRESSION is kept with impression "" (counted in notes
``reports_without_impression``); one with neither findings nor impression is dropped
(``reports_dropped_no_text``). Overlaying these labels on Open-i text is the openi sources'
``labels=`` option, since a data spec names one report source.

    labeled-csv:/data/labeled_reports.csv
    labeled-csv:/data/labeled_reports.csv?id=accession&text=report_text&uncertain=negative
    labeled-csv:/data/reports.csv?labels=/data/labels.json
"""

from __future__ import annotations

import logging
import re
from collections import Counter

from pipelines.data.errors import DataError
from pipelines.data.labels import POLICY_OPTIONS, LabelPolicy, read_labels, row_labels, table_label_columns
from pipelines.data.options import path_option, spec_path, text_option
from pipelines.data.records import SECTION_ORDER, DataBundle, ReportRecord
from pipelines.data.sources import DataSource, SourceSpec, register_source
from pipelines.data.tables import read_table, split_sheet

log = logging.getLogger(__name__)

# Header spellings -> report section. A header ends with ':' and is recognized in any case at the
# start of a line, and in UPPER, Title or Sentence case anywhere (single-line exports).
# Headers not listed (TECHNIQUE:, EXAM:) stay part of the text around them.
SECTION_HEADERS: dict[str, tuple[str, ...]] = {
    "comparison": ("COMPARISON", "COMPARISONS"),
    "indication": (
        "INDICATION",
        "INDICATIONS",
        "CLINICAL INDICATION",
        "HISTORY",
        "CLINICAL HISTORY",
        "REASON FOR EXAM",
        "REASON FOR EXAMINATION",
    ),
    "findings": ("FINDINGS", "FINDING"),
    "impression": ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS"),
}
_SECTION_OF = {name: section for section, names in SECTION_HEADERS.items() for name in names}


def _alternatives(names: list[str]) -> str:
    return "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(set(names), key=len, reverse=True))


_HEADER = re.compile(
    rf"(?:^[ \t]*(?i:(?P<start>{_alternatives(list(_SECTION_OF))}))"
    rf"|(?<![A-Za-z0-9])(?P<inline>"
    rf"{_alternatives([v for n in _SECTION_OF for v in (n, n.title(), n.capitalize())])}))[ \t]*:",
    re.MULTILINE,
)

OPTIONS = {
    "id": "report id column (default: id)",
    "text": "report text column (default: report)",
    "labels": "JSON labels by report id (a .json object or list, a .jsonl file, or a folder of <id>.json) "
    "instead of label columns",
    **POLICY_OPTIONS,
}


def split_sections(text: str) -> tuple[dict[str, str], bool]:
    """Split report text at its section headers; returns the four sections and whether any header was found.

    >>> split_sections("FINDINGS: Clear lungs. IMPRESSION: Normal.")[0]["impression"]
    'Normal.'
    """
    matches = list(_HEADER.finditer(text))
    parts: dict[str, list[str]] = {section: [] for section in SECTION_ORDER}
    if not matches:
        parts["findings"].append(text.strip())
    else:
        preamble = text[: matches[0].start()].strip()
        if preamble:
            parts["findings"].append(preamble)
        for match, following in zip(matches, [*matches[1:], None], strict=True):
            name = " ".join((match.group("start") or match.group("inline")).upper().split())
            body = text[match.end() : following.start() if following else len(text)].strip()
            if body:
                parts[_SECTION_OF[name]].append(body)
    return {section: "\n".join(p for p in pieces if p) for section, pieces in parts.items()}, bool(matches)


def load_labeled_csv(spec: SourceSpec) -> DataBundle:
    """Read a labeled report table into report records."""
    path, sheet = split_sheet(str(spec_path(spec)))
    table = read_table(path, sheet)
    id_column = table.column(text_option(spec, "id", "id"), option="id")
    text_column = table.column(text_option(spec, "text", "report"), option="text")
    policy = LabelPolicy.from_spec(spec)
    labels_path = path_option(spec, "labels")
    label_set = read_labels(labels_path, text_option(spec, "id", "id"), policy) if labels_path else None
    label_columns = None if label_set else table_label_columns(table)

    first_row: dict[str, int] = {}
    counts: Counter[str] = Counter()
    records = []
    for row in table.rows:
        report_id = table.unique_id(row, id_column, first_row)
        text = table.value(row, text_column, required=True)
        if label_set is None:
            labels, disagrees = row_labels(table, row, label_columns, policy)
            counts["no_finding_disagreements"] += disagrees
        elif report_id in label_set.labels:
            labels = label_set.labels[report_id]
        else:
            raise table.error(f"no labels for this report in {label_set.path}", row, id_column)
        sections, has_headers = split_sections(text)
        counts["without_headers"] += not has_headers
        if not sections["findings"] and not sections["impression"]:
            counts["dropped_no_text"] += 1
            continue
        counts["without_impression"] += not sections["impression"]
        counts["without_findings"] += not sections["findings"]
        records.append(ReportRecord(id=report_id, labels=labels, **sections))
    if label_set is not None:
        counts["no_finding_disagreements"] = label_set.disagreements
        extra = [i for i in label_set.labels if i not in first_row]
        if extra:
            raise DataError(label_set.path, f"{len(extra)} labeled id(s) are not in {path}, e.g. {extra[:5]}")
    if not records:
        raise DataError(path, f"no usable reports: all {len(table.rows)} lack both findings and impression")

    notes = {
        "reports_rows": str(len(table.rows)),
        "reports_loaded": str(len(records)),
        "reports_labels_from_table": str(len(records)),
        "reports_labels_from_mesh": "0",
    }
    for key in (
        "dropped_no_text",
        "without_impression",
        "without_findings",
        "without_headers",
        "no_finding_disagreements",
    ):
        notes[f"reports_{key}"] = str(counts[key])
    log.info("%s: %s", path, ", ".join(f"{k}={v}" for k, v in notes.items()))
    return DataBundle(source=str(spec), reports=records, notes=notes)


register_source(
    DataSource(
        name="labeled-csv",
        load=load_labeled_csv,
        description="radiologist-labeled report table (CSV/TSV/XLSX): id, report text and the 14 labels "
        "as columns or a JSON labels file",
        provides=("reports",),
        needs_path=True,
        options=OPTIONS,
    )
)
