"""Radiologist labels read from tables or JSON, and the policy for CheXpert's uncertain/blank values.

Accepted label values (case ignored):

    positive   Yes, Y, True, T, 1, 1.0, positive          (JSON: true, 1)
    negative   No, N, False, F, 0, 0.0, negative           (JSON: false, 0)
    uncertain  -1, -1.0, uncertain                         (CheXpert's "mentioned with uncertainty")
    blank      an empty cell                               (JSON: null; CheXpert's "not mentioned")

Policy options (`?uncertain=...&blank=...` on the sources that read labels):

    uncertain=positive   (default) count an uncertain mention as present, CheXpert's "U-Ones"
    uncertain=negative   count it as absent ("U-Zeros")
    uncertain=error      refuse the file: every label must be decided
    blank=negative       (default) a blank cell means not mentioned, hence absent, as in CheXpert
    blank=error          refuse blank cells (for tables that should be complete)

Anything else is an error naming the file, the row and the label. The 13 CheXpert labels are
required; "No Finding" is optional and always re-derived from them (Yes exactly when no pathology
is present; Support Devices do not count). A table whose own "No Finding" disagrees is counted in
the bundle notes, not silently trusted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.errors import DataError
from pipelines.data.options import choice_option
from pipelines.data.records import labels_from_findings
from pipelines.data.sources import SourceSpec
from pipelines.data.tables import Table, TableRow, column_key, read_table, split_sheet
from pipelines.vocabulary import CHEXPERT_LABELS, YES

POLICY_OPTIONS = {
    "uncertain": "CheXpert -1 (uncertain) label values: positive (default), negative or error",
    "blank": "empty label cells: negative (default, CheXpert's 'not mentioned') or error",
}

_POSITIVE = {"yes", "y", "true", "t", "1", "1.0", "positive"}
_NEGATIVE = {"no", "n", "false", "f", "0", "0.0", "negative"}
_UNCERTAIN = {"-1", "-1.0", "uncertain"}

# Other spellings of the label names seen in labeled tables; case, spaces and punctuation are
# ignored anyway ("pleural_effusion" matches "Pleural Effusion").
LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "Pleural Other": ("Other Pleural",),
    "Support Devices": ("Support Device",),
    "No Finding": ("No Findings",),
}


@dataclass(frozen=True)
class LabelPolicy:
    """How to read CheXpert's uncertain (-1) and blank label values."""

    uncertain: str = "positive"
    blank: str = "negative"

    @classmethod
    def from_spec(cls, spec: SourceSpec) -> LabelPolicy:
        return cls(
            uncertain=choice_option(spec, "uncertain", ("positive", "negative", "error")),
            blank=choice_option(spec, "blank", ("negative", "error")),
        )

    def decide(self, raw: object) -> bool:
        """True for present, False for absent; raises ValueError with the problem otherwise."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.blank == "error":
                raise ValueError("empty label value (option blank=negative reads it as No)")
            return False
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().casefold()
        if text in _POSITIVE:
            return True
        if text in _NEGATIVE:
            return False
        if text in _UNCERTAIN:
            if self.uncertain == "error":
                raise ValueError(
                    f"uncertain label value {raw!r} (option uncertain=positive|negative decides it)"
                )
            return self.uncertain == "positive"
        raise ValueError(f"bad label value {raw!r}; expected Yes/No, 1/0, true/false or -1/blank")


@dataclass
class LabelSet:
    """Labels by report id, from one file; `disagreements` counts rows whose No Finding was re-derived."""

    path: Path
    labels: dict[str, dict[str, str]]
    disagreements: int = 0


def match_label_names(names: list[str]) -> dict[str, str]:
    """Map each label key (13 CheXpert labels, plus No Finding when present) to the name used in `names`."""
    by_key = {column_key(n): n for n in names if n}
    found = {}
    for label in ("No Finding", *CHEXPERT_LABELS):
        for spelling in (label, *LABEL_ALIASES.get(label, ())):
            if column_key(spelling) in by_key:
                found[label] = by_key[column_key(spelling)]
                break
    return found


def build_labels(
    values: dict[str, object], policy: LabelPolicy, fail: Callable[[str, str], DataError]
) -> tuple[dict[str, str], bool]:
    """The 14-key label dict from raw values keyed by label; `fail(problem, label)` makes the error.

    Returns the labels and whether a given "No Finding" value disagreed with the derived one.
    """
    positive = set()
    for label in CHEXPERT_LABELS:
        try:
            if policy.decide(values[label]):
                positive.add(label)
        except ValueError as exc:
            raise fail(str(exc), label) from None
    labels = labels_from_findings(positive)
    disagrees = False
    if "No Finding" in values:
        try:
            given = policy.decide(values["No Finding"])
        except ValueError as exc:
            raise fail(str(exc), "No Finding") from None
        disagrees = given != (labels["No Finding"] == YES)
    return labels, disagrees


def table_label_columns(table: Table) -> dict[str, str]:
    """The table's column for each label; a missing CheXpert label column raises a DataError."""
    found = match_label_names(table.header)
    missing = [label for label in CHEXPERT_LABELS if label not in found]
    if missing:
        raise table.error(
            f"missing label column(s) {missing}; the header has {[h for h in table.header if h]}",
            column=missing[0],
        )
    return found


def row_labels(
    table: Table, row: TableRow, columns: dict[str, str], policy: LabelPolicy
) -> tuple[dict[str, str], bool]:
    """Labels of one table row (see build_labels)."""
    values = {label: row.values.get(column, "") for label, column in columns.items()}
    return build_labels(values, policy, lambda problem, label: table.error(problem, row, columns[label]))


def read_labels(path_text: str | Path, id_column: str, policy: LabelPolicy) -> LabelSet:
    """Labels by report id from a table (CSV/TSV/XLSX, ``#sheet`` allowed), a JSON file or a folder.

    Layouts:
      table            an id column (`id_column`) and one column per label
      file.json        {"<id>": {"Cardiomegaly": "Yes", ...}, ...}, or a list of objects that
                       carry the id under `id_column` next to the labels
      file.jsonl       one such object per line
      folder/          one <id>.json file per report, each holding the label object
    """
    path, sheet = split_sheet(str(path_text))
    if path.is_dir():
        return _read_json_folder(path, policy)
    if path.suffix.lower() in (".json", ".jsonl"):
        return _read_json_file(path, id_column, policy)
    table = read_table(path, sheet)
    id_name = table.column(id_column, option="labels_id")
    columns = table_label_columns(table)
    result = LabelSet(path, {})
    first_row: dict[str, int] = {}
    for row in table.rows:
        report_id = table.unique_id(row, id_name, first_row)
        labels, disagrees = row_labels(table, row, columns, policy)
        result.labels[report_id] = labels
        result.disagreements += disagrees
    return result


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(path, "is a folder; expected a JSON file" if path.is_dir() else "file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise DataError(path, "file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x})", line=line) from None
    if path.suffix.lower() == ".jsonl":
        items = []
        for number, line_text in enumerate(text.splitlines(), start=1):
            if line_text.strip():
                items.append((number, _parse_json(path, line_text, number)))
        return items
    return _parse_json(path, text, 0)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _parse_json(path: Path, text: str, line_offset: int) -> object:
    """Parse JSON text; a repeated key (json.loads would keep the last silently) is an error."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        line = line_offset or exc.lineno
        raise DataError(path, f"not valid JSON ({exc.msg}, column {exc.colno})", line=line) from None
    except _DuplicateKey as exc:
        raise DataError(
            path, f"duplicate key {exc.args[0]!r} in a JSON object", line=line_offset or None
        ) from None
    except RecursionError:  # a label file is two levels deep; thousands mean a broken or hostile file
        raise DataError(path, "JSON nested too deeply to be a labels file", line=line_offset or None) from None


def _labels_from_object(
    path: Path, obj: object, report_id: str, policy: LabelPolicy, line: int | None
) -> tuple[dict[str, str], bool]:
    if isinstance(obj, dict) and isinstance(obj.get("labels"), dict):
        obj = obj["labels"]
    if not isinstance(obj, dict):
        raise DataError(
            path, f"expected an object of labels, got {type(obj).__name__}", line=line, record=report_id
        )
    names = match_label_names([str(k) for k in obj])
    missing = [label for label in CHEXPERT_LABELS if label not in names]
    if missing:
        raise DataError(
            path,
            f"missing label(s) {missing}",
            line=line,
            record=report_id,
            field=missing[0],
            field_kind="key",
        )
    values = {label: obj[name] for label, name in names.items()}
    return build_labels(
        values,
        policy,
        lambda problem, label: DataError(
            path, problem, line=line, record=report_id, field=names[label], field_kind="key"
        ),
    )


def _read_json_file(path: Path, id_column: str, policy: LabelPolicy) -> LabelSet:
    data = _load_json(path)
    result = LabelSet(path, {})
    if isinstance(data, dict):
        entries = [(str(k), v, None) for k, v in data.items()]
    elif isinstance(data, list):
        numbered = data if path.suffix.lower() == ".jsonl" else [(None, item) for item in data]
        entries = []
        for index, (line, item) in enumerate(numbered, start=1):
            where = dict(line=line) if line else dict(row=index)
            if not isinstance(item, dict) or item.get(id_column) in (None, ""):
                raise DataError(
                    path,
                    f"entry has no {id_column!r} key (an option of the source names the id key)",
                    field=id_column,
                    field_kind="key",
                    **where,
                )
            entries.append((str(item[id_column]).strip(), item, line or None))
    else:
        raise DataError(path, "expected a JSON object keyed by report id, or a list of objects")
    for report_id, obj, line in entries:
        if report_id in result.labels:
            raise DataError(path, f"duplicate id {report_id!r}", line=line, record=report_id)
        labels, disagrees = _labels_from_object(path, obj, report_id, policy, line)
        result.labels[report_id] = labels
        result.disagreements += disagrees
    if not result.labels:
        raise DataError(path, "no labeled reports")
    return result


def _read_json_folder(path: Path, policy: LabelPolicy) -> LabelSet:
    files = sorted(
        p for p in path.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise DataError(path, "folder holds no <id>.json label files")
    result = LabelSet(path, {})
    for file in files:
        labels, disagrees = _labels_from_object(file, _load_json(file), file.stem, policy, None)
        result.labels[file.stem] = labels
        result.disagreements += disagrees
    return result
