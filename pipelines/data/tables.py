"""Strict reading of CSV, TSV and XLSX tables, with row numbers kept for error messages.

Every loader that reads a table goes through `read_table`, so all of them report problems the
same way (see pipelines.data.errors): the file, the data row and its line, and the column.
Text must be UTF-8 (a leading byte-order mark is accepted); a cell holding other bytes, or a
NUL character (a binary or UTF-16 file), is an error naming its row and column. Fully blank rows
are skipped; columns whose header cell is empty (a spreadsheet's stray formatted column, a pandas
index) are ignored. A workbook the XLSX reader cannot parse (damaged, truncated, encrypted) is an
error naming the file. A CSV/TSV that ends without a line break inside a quoted field, or whose
last row lacks columns, is refused as probably cut short.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.errors import DataError

log = logging.getLogger(__name__)

XLSX_SUFFIXES = (".xlsx", ".xlsm")
TABLE_SUFFIXES = (".csv", ".tsv", ".xls", *XLSX_SUFFIXES)  # a file read as a table, not a DICOM file
# Undecodable bytes survive decoding with errors="surrogateescape" as U+DC80..U+DCFF; NUL
# (U+0000) never occurs in UTF-8 text but fills UTF-16 text of ASCII letters, so it is refused too.
_NOT_UTF8 = re.compile("[\udc80-\udcff\x00]")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class TableRow:
    """One data row: `number` counts data rows from 1; `position` is its line or sheet row."""

    number: int
    position: int
    values: dict[str, str]


@dataclass
class Table:
    """A parsed table. Cell values are strings, "" for empty cells."""

    path: Path
    header: list[str]
    header_position: int
    rows: list[TableRow] = field(default_factory=list)
    sheet: str | None = None

    @property
    def position_kind(self) -> str:
        return "line" if self.sheet is None else "sheet row"

    def error(self, problem: str, row: TableRow | None = None, column: str | None = None) -> DataError:
        """A DataError located at `row` (or the header when None) and `column`."""
        if row is None:
            return DataError(
                self.path,
                problem,
                line=self.header_position,
                line_kind=self.position_kind,
                field=column,
                sheet=self.sheet,
            )
        return DataError(
            self.path,
            problem,
            row=row.number,
            line=row.position,
            line_kind=self.position_kind,
            field=column,
            sheet=self.sheet,
        )

    def find_column(self, *candidates: str) -> str | None:
        """The header name matching the first candidate found (case, spaces and punctuation ignored)."""
        by_key = {column_key(name): name for name in self.header if name}
        for candidate in candidates:
            if column_key(candidate) in by_key:
                return by_key[column_key(candidate)]
        return None

    def column(self, name: str, *aliases: str, option: str | None = None) -> str:
        """The header name for `name` (or an alias); a missing column raises a DataError."""
        found = self.find_column(name, *aliases)
        if found is None:
            hint = f" (set the column with the option {option}=<name>)" if option else ""
            raise self.error(
                f"missing column; the header has {[h for h in self.header if h]}{hint}", column=name
            )
        return found

    def value(self, row: TableRow, column: str, *, required: bool = False) -> str:
        """The stripped cell text; an empty cell raises a DataError when `required`."""
        text = row.values.get(column, "").strip()
        if required and not text:
            raise self.error("empty value", row, column)
        return text

    def unique_id(self, row: TableRow, column: str, first_row: dict[str, int]) -> str:
        """The row's id in `column` (required); an id seen before is a DataError naming its first
        data row. `first_row` (id -> data row) is filled as the rows are read."""
        value = self.value(row, column, required=True)
        if value in first_row:
            raise self.error(f"duplicate id {value!r} (first at data row {first_row[value]})", row, column)
        first_row[value] = row.number
        return value


def column_key(name: str) -> str:
    """Header name reduced to lower-case letters and digits: 'Series_Description' -> 'seriesdescription'."""
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


def split_sheet(path_text: str) -> tuple[Path, str | None]:
    """Split ``file.xlsx#Sheet2`` into the path and the sheet; a path that exists as given is kept whole."""
    path = Path(path_text).expanduser()
    if path.exists() or "#" not in path_text:
        return path, None
    base, _, sheet = path_text.rpartition("#")
    return Path(base).expanduser(), sheet or None


def read_table(path: Path, sheet: str | None = None) -> Table:
    """Read a CSV (comma), TSV (tab) or XLSX table; `sheet` (name or 1-based number) for XLSX only."""
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder; expected a table file (CSV, TSV or XLSX)")
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise DataError(path, "old binary Excel (.xls) is not supported; save the sheet as .xlsx or .csv")
    if suffix in XLSX_SUFFIXES:
        table = _read_xlsx(path, sheet)
    else:
        if sheet is not None:
            raise DataError(path, f"a sheet ({sheet!r}) can only be selected in an XLSX workbook")
        table = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    if not table.rows:
        raise table.error("no data rows below the header")
    return table


def _read_delimited(path: Path, delimiter: str) -> Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    if data.startswith(_UTF16_BOMS):
        raise DataError(path, "is UTF-16 text (byte-order mark); re-save the file with UTF-8 encoding")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if not data.strip():
        raise DataError(path, "file is empty")
    text = data.decode("utf-8", errors="surrogateescape")
    check_cells = _NOT_UTF8.search(text) is not None  # look cell by cell only when some bytes were bad
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    table: Table | None = None
    last_line = 0
    last_cells: list[str] | None = None  # the last record's cells when it is a data row
    try:
        for cells in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                last_cells = None
                continue
            if table is None:
                table = _new_table(path, cells, start, None)
                continue
            table.rows.append(
                _make_row(table, cells, len(table.rows) + 1, start, strict_width=True, check_utf8=check_cells)
            )
            last_cells = cells
    except csv.Error as exc:
        raise DataError(path, f"not a readable CSV file ({exc})", line=reader.line_num) from None
    if table is None:  # only separators and (Unicode) spaces
        raise DataError(path, "file is empty (no cell holds any text)")
    if last_cells is not None and not text.endswith(("\n", "\r")):
        _check_not_truncated(table, text, last_cells, delimiter)
    return table


def _check_not_truncated(table: Table, text: str, cells: list[str], delimiter: str) -> None:
    """A file that stops without a final line break may have been cut short: refuse it when its last
    row also stops inside a quoted field or lacks named columns; else log a warning (the last field
    may be cut, which no reader can tell)."""
    row = table.rows[-1]
    named_width = max(i for i, name in enumerate(table.header) if name) + 1
    tail = text[_line_offset(text, row.position) :]
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=delimiter, strict=True):
            pass
        open_quote = False
    except csv.Error as exc:
        open_quote = "unexpected end of data" in str(exc)
    if open_quote:
        raise table.error("the file ends inside a quoted field: was it cut short? Copy or export it again", row)
    if len(cells) < named_width:
        raise table.error(
            f"the last row has {len(cells)} fields but the header has {named_width}, and the file ends "
            "without a line break: was it cut short? Copy or export it again",
            row,
        )
    log.warning("%s ends without a line break; if the file was cut short, its last row (data row %d) "
                "is incomplete", table.path, row.number)


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _line_offset(text: str, line: int) -> int:
    """Character offset where physical line `line` (1-based, as csv counts lines) starts."""
    offset = 0
    for match in _LINE_BREAK.finditer(text):
        if line <= 1:
            break
        offset, line = match.end(), line - 1
    return offset


def _read_xlsx(path: Path, sheet: str | None) -> Table:
    import openpyxl  # deferred: only spreadsheet users pay for the import
    from openpyxl.utils.exceptions import InvalidFileException

    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DataError(path, f"not a readable XLSX workbook ({exc})") from None
    except Exception as exc:  # a damaged workbook fails deep inside openpyxl/zlib in many ways
        raise DataError(path, f"not a readable XLSX workbook ({type(exc).__name__}: {exc})") from None
    try:
        return _read_sheet(path, book, sheet)
    except DataError:
        raise
    except Exception as exc:  # rows are parsed lazily: damage inside a sheet surfaces here
        raise DataError(path, f"not a readable XLSX workbook ({type(exc).__name__}: {exc})") from None
    finally:
        book.close()


def _read_sheet(path: Path, book, sheet: str | None) -> Table:
    """The rows of `sheet` (name, 1-based number, or None for the first) of an open workbook."""
    names = book.sheetnames
    if sheet is None:
        name = names[0]
    elif sheet in names:
        name = sheet
    elif sheet.isdigit() and 1 <= int(sheet) <= len(names):
        name = names[int(sheet) - 1]
    else:
        raise DataError(path, f"no sheet {sheet!r}; the workbook has sheets {names}")
    table: Table | None = None
    for position, values in enumerate(book[name].iter_rows(values_only=True), start=1):
        cells = [_cell_text(v) for v in values]
        if not any(c.strip() for c in cells):
            continue
        if table is None:
            table = _new_table(path, cells, position, name)
            continue
        table.rows.append(
            _make_row(table, cells, len(table.rows) + 1, position, strict_width=False, check_utf8=False)
        )
    if table is None:
        raise DataError(path, "sheet is empty", sheet=name)
    return table


def _cell_text(value: object) -> str:
    """A spreadsheet cell as text: integral floats without '.0', dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _new_table(path: Path, cells: list[str], position: int, sheet: str | None) -> Table:
    header = [c.strip() for c in cells]
    table = Table(path, header, position, sheet=sheet)
    for index, name in enumerate(header, start=1):
        bad = _NOT_UTF8.search(name)
        if bad:
            raise table.error(f"header cell {index}: {_encoding_problem(bad.group())}")
    named = [h for h in header if h]
    keys = [column_key(h) for h in named]
    duplicates = sorted({h for h in named if keys.count(column_key(h)) > 1})
    if duplicates:
        raise table.error(f"the header repeats column(s) {duplicates}")
    if not named:
        raise table.error("the header row has no column names")
    return table


def _make_row(
    table: Table, cells: list[str], number: int, position: int, strict_width: bool, check_utf8: bool
) -> TableRow:
    width = len(table.header)
    if strict_width and len(cells) > width and any(c.strip() for c in cells[width:]):
        raise DataError(
            table.path,
            f"has {len(cells)} fields but the header has {width} (an unquoted comma in a text field?)",
            row=number,
            line=position,
        )
    padded = [*cells, *[""] * (width - len(cells))]
    values = {name: cell for name, cell in zip(table.header, padded, strict=False) if name}
    if check_utf8:
        for name, cell in values.items():
            bad = _NOT_UTF8.search(cell)
            if bad:
                raise table.error(_encoding_problem(bad.group()), TableRow(number, position, {}), name)
    return TableRow(number, position, values)


def _encoding_problem(char: str) -> str:
    """What a character matched by _NOT_UTF8 means, and what to do about it."""
    if char == "\x00":
        return "NUL character (a binary or UTF-16 file?); re-save the file as UTF-8 text"
    return f"not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x}); re-save the file with UTF-8 encoding"

