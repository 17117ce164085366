"""The `series-table` data source: MRI series descriptions with their classes, from CSV or XLSX.

A table with a description column and a class column (``path.xlsx#Sheet2`` selects a sheet by
name, ``#2`` by position). Without the ``description=`` / ``class=`` options the columns are found
by the first of these header names present (case, spaces and punctuation ignored):

    description: description, series description, seriesdescription, (0008,103E), series, raw, text, input
    class:       class, label, sequence, sequence class, sequence type, category, harmonized, target, output

Class values are normalized through CLASS_SYNONYMS (case, spaces, '-', '_', '/' and '.' ignored:
``FLAIR``, ``T2 FLAIR``, ``t2/flair``, ``T2-FLAIR`` -> ``T2/FLAIR``); any other value is an error
naming the row. Descriptions are de-duplicated after whitespace normalization (runs of spaces
become one, ends trimmed; case kept), keeping the first row; a repeated description with a
different class is a conflict, kept with its first class and reported in the notes and the log.
Record ids are ``series-`` + 12 hex digits of the SHA-256 of the normalized description, so a
description keeps its id when rows are added or reordered.

With ``split=<value>`` only the rows whose ``split`` column holds that value (case ignored) are
read, e.g. one half of tests/data/real_series_descriptions.csv; the other rows are not checked.

Notes: series_rows, series_loaded, series_duplicates_removed, series_label_conflicts, when any,
series_label_conflict_examples, and with ``split=`` series_split and series_rows_other_splits.

    series-table:/data/series.csv
    series-table:tests/data/real_series_descriptions.csv?split=dev
    series-table:/data/series.xlsx#Sheet2?description=SeriesDescription&class=Sequence
"""

from __future__ import annotations

import hashlib
import logging
import re

from pipelines.data.errors import DataError
from pipelines.data.options import spec_path, text_option
from pipelines.data.records import DataBundle, SeriesRecord
from pipelines.data.sources import DataSource, SourceSpec, register_source
from pipelines.data.tables import Table, TableRow, read_table, split_sheet
from pipelines.vocabulary import SERIES_CLASSES

log = logging.getLogger(__name__)

DESCRIPTION_COLUMNS = (
    "description",
    "series description",
    "seriesdescription",
    "(0008,103E)",
    "series",
    "raw",
    "text",
    "input",
)
SPLIT_COLUMN = "split"  # read by the split=<value> option
CLASS_COLUMNS = (
    "class",
    "label",
    "sequence",
    "sequence class",
    "sequence type",
    "category",
    "harmonized",
    "target",
    "output",
)

# Accepted spellings of each class, written in normalized form (see class_key).
CLASS_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("t1", "t1w", "t1wi", "t1 weighted"), "T1"),
    **dict.fromkeys(("t2", "t2w", "t2wi", "t2 weighted"), "T2"),
    **dict.fromkeys(
        ("t2 flair", "flair", "t2flair", "t2w flair", "flair t2", "t2 weighted flair"), "T2/FLAIR"
    ),
    **dict.fromkeys(("dwi", "dw", "diffusion", "diffusion weighted", "trace", "dwi trace"), "DWI"),
    **dict.fromkeys(("adc", "adc map", "apparent diffusion coefficient"), "ADC"),
    **dict.fromkeys(("swi", "susceptibility", "susceptibility weighted", "swan"), "SWI"),
    **dict.fromkeys(("other", "others", "misc", "miscellaneous"), "Other"),
}
assert set(CLASS_SYNONYMS.values()) == set(SERIES_CLASSES)


def class_key(text: str) -> str:
    """Lower case, with runs of spaces, '-', '_', '/', '.' and '+' made one space."""
    return re.sub(r"[\s\-_/.+]+", " ", text.casefold()).strip()


def normalize_class(text: str) -> str | None:
    """The series class a label spelling means, or None when it is not a known spelling."""
    return CLASS_SYNONYMS.get(class_key(text))


def series_id(description: str) -> str:
    """Content id of a (whitespace-normalized) description."""
    return "series-" + hashlib.sha256(description.encode()).hexdigest()[:12]


def _pick_column(table: Table, spec: SourceSpec, option: str, candidates: tuple[str, ...]) -> str:
    named = text_option(spec, option, "")
    if named:
        return table.column(named, option=option)
    found = table.find_column(*candidates)
    if found is None:
        raise table.error(
            f"no {option} column found among {[h for h in table.header if h]}; name it with "
            f"the option {option}=<column>",
            column=candidates[0],
        )
    return found


def _rows_of_split(table: Table, wanted: str) -> tuple[list[TableRow], int | None]:
    """The rows whose split column holds `wanted` (case ignored) and how many others there were;
    every row and None when no split is asked for."""
    if not wanted:
        return table.rows, None
    column = table.column(SPLIT_COLUMN)
    kept = [row for row in table.rows if table.value(row, column).casefold() == wanted.casefold()]
    if not kept:
        found = sorted({table.value(row, column) for row in table.rows})
        raise table.error(f"no row has split={wanted!r}; the column holds {found}", column=column)
    return kept, len(table.rows) - len(kept)


def load_series_table(spec: SourceSpec) -> DataBundle:
    """Read a labeled series-description table into series records."""
    path, sheet = split_sheet(str(spec_path(spec)))
    table = read_table(path, sheet)
    description_column = _pick_column(table, spec, "description", DESCRIPTION_COLUMNS)
    class_column = _pick_column(table, spec, "class", CLASS_COLUMNS)
    if description_column == class_column:
        raise table.error("the description and class options name the same column", column=class_column)

    rows, other_splits = _rows_of_split(table, text_option(spec, "split", ""))

    first: dict[str, tuple[str, int]] = {}  # normalized description -> (class, data row)
    records = []
    duplicates = 0
    conflicts = []
    for row in rows:
        raw = table.value(row, description_column, required=True)
        label_text = table.value(row, class_column, required=True)
        label = normalize_class(label_text)
        if label is None:
            raise table.error(
                f"unknown class {label_text!r}; expected one of {list(SERIES_CLASSES)} "
                "or a spelling listed in CLASS_SYNONYMS",
                row,
                class_column,
            )
        key = " ".join(raw.split())
        if key in first:
            duplicates += 1
            kept, kept_row = first[key]
            if kept != label:
                conflicts.append(f"{key!r}: {kept} (data row {kept_row}) vs {label} (data row {row.number})")
            continue
        first[key] = (label, row.number)
        records.append(SeriesRecord(id=series_id(key), description=key, label=label))
    if len({r.id for r in records}) != len(records):  # a hash collision: 12 hex digits make it unlikely
        raise DataError(path, "two descriptions share a content id; report this as a bug")

    notes = {
        "series_rows": str(len(table.rows)),
        "series_loaded": str(len(records)),
        "series_duplicates_removed": str(duplicates),
        "series_label_conflicts": str(len(conflicts)),
    }
    if other_splits is not None:
        notes["series_split"] = text_option(spec, "split", "")
        notes["series_rows_other_splits"] = str(other_splits)
    if conflicts:
        notes["series_label_conflict_examples"] = "; ".join(conflicts[:5]) + (
            f"; ... {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        )
        log.warning(
            "%s: %d description(s) appear with different classes; the first row's class is kept: %s",
            path,
            len(conflicts),
            notes["series_label_conflict_examples"],
        )
    log.info("%s: %s", path, ", ".join(f"{k}={v}" for k, v in notes.items() if v.isdigit()))
    return DataBundle(source=str(spec), series=records, notes=notes)


register_source(
    DataSource(
        name="series-table",
        load=load_series_table,
        description="MRI series descriptions with classes from a CSV/TSV or XLSX table (file.xlsx#Sheet)",
        provides=("series",),
        needs_path=True,
        options={
            "description": "description column (default: found by common names such as 'description')",
            "class": "class column (default: found by common names such as 'class' or 'label')",
            "split": "read only the rows whose 'split' column holds this value (e.g. dev or final)",
        },
    )
)
