"""The one error type every data source raises for a bad input file.

A DataError is a ValueError whose message names where the problem is, so a user can open the
file and fix it without reading code:

    /data/indiana_reports.csv, data row 17 (line 18), column 'MeSH': empty value
    /data/series.xlsx, sheet 'Sheet2', data row 4 (sheet row 5), column 'class': unknown class 'T3'
    /data/ecgen-radiology/12.xml, line 9: not well-formed XML (mismatched tag)
    /data/labels.json, report '12', key 'Edema': bad label value 'maybe'

Row numbering: "data row N" counts records from 1, the header row not included; the number in
parentheses is the physical position (text line of a CSV, where the record starts; row number a
spreadsheet program shows for an XLSX sheet).
"""

from __future__ import annotations

import functools
from pathlib import Path


class DataError(ValueError):
    """A data file that cannot be used as is; the message names the file, row and field."""

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        row: int | None = None,
        line: int | None = None,
        line_kind: str = "line",
        field: str | None = None,
        field_kind: str = "column",
        sheet: str | None = None,
        record: str | None = None,
    ) -> None:
        self._where = dict(
            row=row,
            line=line,
            line_kind=line_kind,
            field=field,
            field_kind=field_kind,
            sheet=sheet,
            record=record,
        )
        self.path = str(path)
        self.problem = problem
        self.row = row
        self.line = line
        self.field = field
        self.sheet = sheet
        self.record = record
        parts = [self.path]
        if sheet is not None:
            parts.append(f"sheet {sheet!r}")
        if row is not None:
            parts.append(f"data row {row}" + (f" ({line_kind} {line})" if line is not None else ""))
        elif line is not None:
            parts.append(f"{line_kind} {line}")
        if record is not None:
            parts.append(f"report {record!r}")
        if field is not None:
            parts.append(f"{field_kind} {field!r}")
        super().__init__(", ".join(parts) + ": " + problem)

    def __reduce__(self):  # keyword arguments survive pickling (e.g. across worker processes)
        return functools.partial(type(self), **self._where), (self.path, self.problem)
