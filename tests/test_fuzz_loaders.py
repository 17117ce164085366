"""Property tests: every data loader, fed damaged files, loads them right or raises a DataError that
names the file (and the row/line and field where there is one) — never another exception, never a
silent wrong load.

Each example writes a valid file, loads it as the baseline, damages it (truncated, re-encoded as
Latin-1 / cp1252 / UTF-16, random bytes spliced in or instead, a column dropped, a huge field, a
duplicate id, a bad value, emptied) and loads it again; what the second load may return depends on
the damage (see `check_table_outcome`). Files live in a fresh TemporaryDirectory per example
(function-scoped fixtures are not reset between hypothesis examples).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipelines.data.errors import DataError
from pipelines.data.labeled_csv import load_labeled_csv
from pipelines.data.openi_csv import load_openi_csv
from pipelines.data.openi_xml import load_openi_xml
from pipelines.data.records import DataBundle
from pipelines.data.series_table import load_series_table, normalize_class
from pipelines.data.sources import SourceSpec, parse_data_spec
from pipelines.vocabulary import CHEXPERT_LABELS, LABEL_KEYS, SERIES_CLASSES

# Generated cases per property (recorded in README's Tests table); no deadline: two shared cores.
N_TABLE = 150  # per table loader (openi-csv, labeled-csv, series-table)
N_XLSX = 30
N_XML = 80
N_ARCHIVE = 40
N_LABELS_JSON = 80
N_MAPPING = 60
N_SPEC = 200
N_DICOM = 15

FIELD_LIMIT = csv.field_size_limit()  # 131072 characters: csv refuses a longer field

# Text as people and exports write it: any printable character (accents, CJK, symbols), plus the
# characters CSV quoting has to handle.
CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from(
    list(',";:\n\r é°µ中')
)
TEXT = st.text(CHARS, max_size=30)
NONBLANK = st.text(CHARS, min_size=1, max_size=30).filter(lambda t: t.strip())
MESH_TERMS = ["normal", "Cardiomegaly/mild", "Opacity/lung/base/left", "Pleural Effusion/left/small",
              "Nodule/lung", "Catheters, Indwelling", "Spine/degenerative", "Unmapped Heading/x"]
CLASS_SPELLINGS = ["T1", "t1w", "T2", "FLAIR", "t2/flair", "DWI", "trace", "ADC", "swi", "Other", "misc"]


@contextlib.contextmanager
def fresh_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings the data package logs while the block runs (caplog is function-scoped)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("pipelines.data"), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def load(loader: Callable[[SourceSpec], DataBundle], kind: str, path: Path,
         **options: str) -> tuple[DataBundle | None, DataError | None]:
    """The bundle, or the DataError, which must name the file (or the labels/mapping file an option
    gave); any other exception fails the test."""
    try:
        return loader(SourceSpec(kind, str(path), options)), None
    except DataError as exc:
        named = [str(path), *(value for key, value in options.items() if key in ("labels", "mapping"))]
        assert any(name in str(exc) for name in named), f"error does not name the file: {exc}"
        return None, exc


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def records(bundle: DataBundle) -> list:
    return [*bundle.reports, *bundle.series]


def check_invariants(bundle: DataBundle) -> None:
    """What any loaded bundle must satisfy, whatever the file held."""
    ids = [r.id for r in records(bundle)]
    assert len(ids) == len(set(ids)), "duplicate ids loaded"
    assert all(r.id.strip() == r.id and r.id for r in records(bundle))
    for report in bundle.reports:
        assert set(report.labels) == set(LABEL_KEYS)
        assert report.findings or report.impression
    for series in bundle.series:
        assert series.label in SERIES_CLASSES and series.description


# ---------------------------------------------------------------- tables (CSV) and their damage


@dataclass
class TableCase:
    """A valid table for one loader, and what its columns mean."""

    kind: str
    loader: Callable[[SourceSpec], DataBundle]
    header: list[str]
    rows: list[list[str]]
    id_column: str | None  # duplicate values here are an error; None: duplicates are de-duplicated
    required: tuple[str, ...]  # a missing one is an error naming it
    value_column: str  # a bad value here is an error naming the row and this column
    bad_value: str
    text_column: str  # where a huge field goes
    blank: dict[str, str] = field(default_factory=dict)  # optional column -> record field it fills

    def write(self, path: Path, header: list[str] | None = None, rows: list[list[str]] | None = None) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows([header or self.header, *(self.rows if rows is None else rows)])
        data = buffer.getvalue().encode("utf-8")
        path.write_bytes(data)
        return data


OPENI_HEADER = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]


@st.composite
def openi_cases(draw: st.DrawFn) -> TableCase:
    uids = draw(st.lists(st.integers(1, 99_999), min_size=1, max_size=6, unique=True))
    rows = []
    for uid in uids:
        mesh = ";".join(draw(st.lists(st.sampled_from(MESH_TERMS), min_size=1, max_size=3)))
        rows.append([str(uid), mesh, draw(TEXT), "Xray Chest PA and Lateral", draw(TEXT), draw(TEXT),
                     draw(NONBLANK), draw(TEXT)])
    return TableCase("openi-csv", load_openi_csv, OPENI_HEADER, rows, "uid",
                     ("uid", "MeSH", "findings", "impression"), "MeSH", "", "findings",
                     blank={"comparison": "comparison", "indication": "indication", "Problems": "", "image": ""})


LABEL_VALUES = ["Yes", "No", "1", "0", "-1", "", "true", "FALSE", "1.0", "negative"]


@st.composite
def labeled_cases(draw: st.DrawFn) -> TableCase:
    ids = draw(st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,7}", fullmatch=True), min_size=1,
                        max_size=6, unique=True))
    rows = []
    for report_id in ids:
        text = draw(st.one_of(NONBLANK, st.builds("FINDINGS: {} IMPRESSION: {}".format, NONBLANK, TEXT)))
        rows.append([report_id, text, *(draw(st.sampled_from(LABEL_VALUES)) for _ in CHEXPERT_LABELS),
                     draw(st.sampled_from(["Yes", "No", ""]))])
    label = draw(st.sampled_from(CHEXPERT_LABELS))
    return TableCase("labeled-csv", load_labeled_csv, ["id", "report", *CHEXPERT_LABELS, "No Finding"], rows,
                     "id", ("id", "report", *CHEXPERT_LABELS), label, draw(st.sampled_from(["maybe", "2", "?"])),
                     "report", blank={"No Finding": ""})


@st.composite
def series_cases(draw: st.DrawFn) -> TableCase:
    descriptions = draw(st.lists(NONBLANK, min_size=1, max_size=6))
    rows = [[d, draw(st.sampled_from(CLASS_SPELLINGS)), draw(TEXT)] for d in descriptions]
    return TableCase("series-table", load_series_table, ["description", "class", "note"], rows, None,
                     ("description", "class"), "class", draw(st.sampled_from(["T3", "PD", "flair?"])),
                     "description", blank={"note": ""})


TABLE_CASES = {"openi-csv": openi_cases(), "labeled-csv": labeled_cases(), "series-table": series_cases()}

DAMAGE = ("truncate", "encoding", "random_bytes", "splice", "drop_column", "huge_field", "duplicate_id",
          "bad_value", "empty")


def check_table_outcome(case: TableCase, damage: str, data: st.DataObject, folder: Path,
                        baseline: DataBundle) -> None:
    """Damage the baseline file one way and check what loading it again may do."""
    path = folder / "table.csv"
    original = case.write(path)
    base = {r.id: r for r in records(baseline)}

    def reload(**options: str) -> tuple[DataBundle | None, DataError | None, list[str]]:
        with captured_warnings() as warnings:
            bundle, error = load(case.loader, case.kind, path, **options)
        if bundle is not None:
            check_invariants(bundle)
        return bundle, error, warnings

    if damage == "truncate":
        # Loads only what the file still holds intact; a cut last row is refused, or warned about
        # when the cut falls inside its last field (no reader can tell that from a short value).
        path.write_bytes(original[: data.draw(st.integers(0, len(original) - 1), label="cut")])
        bundle, error, warnings = reload()
        if bundle is not None:
            *intact, last = records(bundle)
            assert all(base.get(r.id) == r for r in intact)
            assert base.get(last.id) == last or any("line break" in w for w in warnings)

    elif damage == "encoding":
        # Bytes that are not UTF-8 (or hold NUL, or a UTF-16 byte-order mark) are refused with the
        # row and column, or the header line; UTF-8 bytes load, identical when nothing changed.
        encoding = data.draw(st.sampled_from(["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-8-sig"]))
        text = original.decode("utf-8")
        path.write_bytes(text.encode(encoding, errors="replace"))
        raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
        valid = b"\x00" not in raw and not raw.startswith((b"\xff\xfe", b"\xfe\xff")) and is_utf8(raw)
        bundle, error, _ = reload()
        if not valid:
            assert error is not None and re.search(r"UTF-8|UTF-16|NUL", str(error)), error
            located = (error.row is not None and error.field is not None) or error.line is not None
            assert located or "UTF-16" in str(error), error
        elif raw == original:
            assert bundle is not None and records(bundle) == records(baseline)

    elif damage == "random_bytes":
        path.write_bytes(data.draw(st.binary(max_size=400), label="bytes"))
        reload()

    elif damage == "splice":
        at = data.draw(st.integers(0, len(original)), label="at")
        path.write_bytes(original[:at] + data.draw(st.binary(min_size=1, max_size=8), label="junk") + original[at:])
        reload()

    elif damage == "drop_column":
        column = data.draw(st.sampled_from(case.header), label="column")
        keep = [i for i, name in enumerate(case.header) if name != column]
        case.write(path, [case.header[i] for i in keep], [[row[i] for i in keep] for row in case.rows])
        bundle, error, _ = reload()
        if column in case.required:
            assert error is not None and error.field is not None, error
            assert column.casefold() in str(error).casefold(), error
            assert "missing" in str(error) or "no " in str(error), error
        else:
            assert bundle is not None, error
            fill = case.blank[column]
            expected = [r if not fill else type(r)(**{**r.__dict__, fill: ""}) for r in records(baseline)]
            assert records(bundle) == expected

    elif damage == "huge_field":
        size = data.draw(st.sampled_from([FIELD_LIMIT // 2, FIELD_LIMIT + 1]), label="size")
        row = data.draw(st.integers(0, len(case.rows) - 1), label="row")
        rows = [list(r) for r in case.rows]
        rows[row][case.header.index(case.text_column)] = "x" * size
        case.write(path, rows=rows)
        bundle, error, _ = reload()
        if size > FIELD_LIMIT:
            assert error is not None and "field limit" in str(error) and error.line is not None, error
        elif error is not None:  # a huge field may displace what the row needed, never crash
            assert error.row is not None, error

    elif damage == "duplicate_id":
        first, second = sorted(data.draw(st.lists(st.integers(0, len(case.rows) - 1), min_size=2, max_size=2,
                                                  unique=True), label="rows")) if len(case.rows) > 1 else (0, 0)
        assume(first != second)
        column = case.header.index(case.id_column or "description")
        rows = [list(r) for r in case.rows]
        rows[second][column] = rows[first][column]
        case.write(path, rows=rows)
        bundle, error, _ = reload()
        if case.id_column is not None:  # ids: an error naming the second row, the column and the first
            assert error is not None, "duplicate ids loaded"
            assert re.search(rf"data row {second + 1} \(line \d+\), column '{case.id_column}': duplicate id .*"
                             rf"first at data row {first + 1}\)", str(error)), error
        else:  # series descriptions: documented de-duplication, first row kept, conflicts counted
            assert bundle is not None, error
            seen: dict[str, str] = {}
            conflicts = 0
            for description, spelling, _ in rows:
                key, label = " ".join(description.split()), normalize_class(spelling)
                conflicts += key in seen and seen[key] != label
                seen.setdefault(key, label)
            assert [(s.description, s.label) for s in bundle.series] == list(seen.items())
            assert bundle.notes["series_duplicates_removed"] == str(len(rows) - len(seen))
            assert bundle.notes["series_label_conflicts"] == str(conflicts)

    elif damage == "bad_value":
        row = data.draw(st.integers(0, len(case.rows) - 1), label="row")
        rows = [list(r) for r in case.rows]
        rows[row][case.header.index(case.value_column)] = case.bad_value
        case.write(path, rows=rows)
        bundle, error, _ = reload()
        assert error is not None, f"bad {case.value_column} value {case.bad_value!r} was loaded"
        assert (error.row, error.field) == (row + 1, case.value_column), error

    elif damage == "empty":
        content = data.draw(st.sampled_from([b"", b"  \r\n\n", b",,,\n,,\n", "\u00a0\n".encode(),
                                             ",".join(case.header).encode() + b"\r\n"]), label="content")
        path.write_bytes(content)
        bundle, error, _ = reload()
        assert error is not None and ("empty" in str(error) or "no data rows" in str(error)), error


@pytest.mark.parametrize("kind", sorted(TABLE_CASES))
def test_damaged_tables_load_right_or_fail_with_a_located_data_error(kind: str) -> None:
    @settings(max_examples=N_TABLE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=TABLE_CASES[kind], damage=st.sampled_from(DAMAGE), data=st.data())
    def check(case: TableCase, damage: str, data: st.DataObject) -> None:
        with fresh_dir() as folder:
            case.write(folder / "table.csv")
            baseline, error = load(case.loader, case.kind, folder / "table.csv")
            assume(baseline is not None)  # e.g. every labeled report reduced to headers only
            check_table_outcome(case, damage, data, folder, baseline)

    check()


# ---------------------------------------------------------------- XLSX workbooks


def write_series_xlsx(path: Path, rows: list[list[str]]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["description", "class"])
    for row in rows:
        sheet.append(row)
    book.save(path)


@settings(max_examples=N_XLSX, deadline=None)
@given(
    rows=st.lists(st.tuples(st.from_regex(r"[A-Z][A-Z0-9 ]{0,12}", fullmatch=True),
                            st.sampled_from(CLASS_SPELLINGS)).map(list), min_size=1, max_size=8),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.floats(0, 1, exclude_max=True),
)
def test_damaged_workbooks_load_the_same_rows_or_fail_with_a_data_error(rows, flips, cut) -> None:
    """A flipped byte or a cut in an XLSX (a zip of XML parts) is a DataError naming the file, or loads
    exactly the baseline rows (damage in a part the reader does not use); never a crash."""
    with fresh_dir() as folder:
        path = folder / "series.xlsx"
        write_series_xlsx(path, rows)
        baseline, error = load(load_series_table, "series-table", path)
        assert baseline is not None, error
        raw = bytearray(path.read_bytes())
        for where, xor in flips:
            raw[int(where * len(raw))] ^= xor
        path.write_bytes(bytes(raw[: int(cut * len(raw))] if cut is not None else raw))
        bundle, error = load(load_series_table, "series-table", path)
        if bundle is not None:
            assert bundle.series == baseline.series


# ---------------------------------------------------------------- Open-i XML: files and archives


def report_xml(uid: str, findings: str, impression: str, mesh: list[str], *, id_tag: str = "IUXRId",
               sections: bool = True, encoding: str = "utf-8") -> str:
    def text(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    body = (f'<AbstractText Label="FINDINGS">{text(findings)}</AbstractText>\n'
            f'<AbstractText Label="IMPRESSION">{text(impression)}</AbstractText>\n') if sections else ""
    terms = "".join(f"<major>{text(t)}</major>" for t in mesh)
    return (f'<?xml version="1.0" encoding="{encoding}"?>\n<eCitation>\n<{id_tag} id="{uid}"/>\n'
            f"<MedlineCitation><Article><Abstract>\n{body}</Abstract></Article></MedlineCitation>\n"
            f"<MeSH>{terms}</MeSH>\n</eCitation>\n")


# XML 1.0 allows no control characters besides tab, newline and carriage return.
XML_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), min_size=1,
                   max_size=30).filter(lambda t: t.strip())
XML_REPORTS = st.lists(st.tuples(st.integers(1, 9999).map(str), XML_TEXT, XML_TEXT,
                                 st.lists(st.sampled_from(MESH_TERMS), min_size=1, max_size=3)),
                       min_size=1, max_size=5, unique_by=lambda r: r[0])
XML_DAMAGE = ("truncate", "flip", "encoding", "duplicate_id", "no_sections", "no_mesh", "random_bytes", "empty")


@settings(max_examples=N_XML, deadline=None)
@given(reports=XML_REPORTS, damage=st.sampled_from(XML_DAMAGE), data=st.data())
def test_damaged_xml_reports_load_right_or_fail_with_a_located_data_error(reports, damage, data) -> None:
    with fresh_dir() as folder:
        files = {uid: report_xml(uid, f, i, mesh) for uid, f, i, mesh in reports}
        for uid, xml in files.items():
            (folder / f"{uid}.xml").write_text(xml, encoding="utf-8")
        baseline, error = load(load_openi_xml, "openi-xml", folder)
        assert baseline is not None, error
        victim_uid = data.draw(st.sampled_from(sorted(files)), label="file")
        victim = folder / f"{victim_uid}.xml"
        uid, findings, impression, mesh = next(r for r in reports if r[0] == victim_uid)
        raw = victim.read_bytes()
        # outcome: "error" (a DataError naming the damaged file), "same" (the baseline reports),
        # or "any" (loads what parses, or a DataError)
        outcome = "error"
        if damage == "truncate":  # cut XML is not well-formed unless only the final newline went
            cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
            victim.write_bytes(raw[:cut])
            outcome = "error" if raw[:cut].strip() != raw.strip() else "same"
        elif damage == "flip":  # may change text (a different report) but never crashes
            flipped = bytearray(raw)
            flipped[data.draw(st.integers(0, len(raw) - 1), label="at")] ^= data.draw(st.integers(1, 255), label="xor")
            victim.write_bytes(bytes(flipped))
            outcome = "any"
        elif damage == "encoding":  # the declared encoding (or a byte-order mark) is honored
            encoding, declared = data.draw(st.sampled_from(
                [("latin-1", "ISO-8859-1"), ("latin-1", "utf-8"), ("utf-16", "UTF-16"), ("utf-8-sig", "utf-8")]),
                label="encoding")
            xml = report_xml(uid, findings, impression, mesh, encoding=declared)
            try:
                victim.write_bytes(xml.encode(encoding))
            except UnicodeEncodeError:
                assume(False)
            undeclared_latin1 = encoding == "latin-1" and declared == "utf-8" and not xml.isascii()
            outcome = "error" if undeclared_latin1 else "same"
        elif damage == "duplicate_id":
            assume(len(files) > 1)
            other = next(u for u in files if u != victim_uid)
            victim.write_text(files[victim_uid].replace(f'IUXRId id="{victim_uid}"', f'IUXRId id="{other}"'))
        elif damage == "no_sections":
            victim.write_text(report_xml(uid, findings, impression, mesh, sections=False))
        elif damage == "no_mesh":
            victim.write_text(report_xml(uid, findings, impression, []))
        elif damage == "random_bytes":
            victim.write_bytes(data.draw(st.binary(max_size=300), label="bytes"))
        elif damage == "empty":
            victim.write_bytes(data.draw(st.sampled_from([b"", b" \n"]), label="content"))

        bundle, error = load(load_openi_xml, "openi-xml", folder)
        if outcome == "error":
            assert error is not None, f"{damage} loaded without an error"
            if damage == "duplicate_id":  # named at whichever of the two files comes second
                assert "duplicate id" in str(error) and error.field == "IUXRId", error
            else:
                assert str(victim) in str(error), error
            if damage == "no_sections":
                assert error.field == "AbstractText", error
            if damage == "no_mesh":
                assert error.field == "MeSH", error
            if damage == "encoding":
                assert "UTF-8" in str(error) and error.line is not None, error
        elif outcome == "same":
            assert error is None and bundle.reports == baseline.reports, error
        elif bundle is not None:
            check_invariants(bundle)


def pack(folder: Path, kind: str) -> Path:
    if kind == "zip":
        archive = folder.parent / "reports.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for file in sorted(folder.iterdir()):
                out.write(file, f"ecgen-radiology/{file.name}")
    else:
        archive = folder.parent / f"reports.{kind}"
        with tarfile.open(archive, "w:gz" if kind == "tgz" else "w:bz2") as out:
            out.add(folder, arcname="ecgen-radiology")
    return archive


@settings(max_examples=N_ARCHIVE, deadline=None)
@given(reports=XML_REPORTS, kind=st.sampled_from(["tgz", "zip", "tar.bz2"]),
       flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3),
       cut=st.none() | st.floats(0, 1, exclude_max=True))
def test_damaged_report_archives_fail_with_a_data_error(reports, kind, flips, cut) -> None:
    """A cut or flipped .tgz/.zip/.tar.bz2 is a DataError naming the archive (or the member), or loads
    exactly the baseline reports (damage in bytes no reader uses, such as a header timestamp)."""
    with fresh_dir() as root:
        folder = root / "ecgen-radiology"
        folder.mkdir()
        for uid, findings, impression, mesh in reports:
            (folder / f"{uid}.xml").write_text(report_xml(uid, findings, impression, mesh), encoding="utf-8")
        archive = pack(folder, kind)
        baseline, error = load(load_openi_xml, "openi-xml", archive)
        assert baseline is not None and baseline.reports == load_openi_xml(
            SourceSpec("openi-xml", str(folder))).reports, error
        raw = bytearray(archive.read_bytes())
        for where, xor in flips:
            raw[int(where * len(raw))] ^= xor
        archive.write_bytes(bytes(raw[: int(cut * len(raw))] if cut is not None else raw))
        bundle, error = load(load_openi_xml, "openi-xml", archive)
        if bundle is not None:  # checksums (zip CRC-32, gzip CRC-32, bzip2 block CRCs) catch the rest
            assert bundle.reports == baseline.reports


# ---------------------------------------------------------------- JSON labels and the MeSH mapping

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False) | st.sampled_from(LABEL_VALUES)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
JSON_DAMAGE = ("truncate", "value", "entry", "duplicate_key", "deep", "random_bytes", "jsonl")


@settings(max_examples=N_LABELS_JSON, deadline=None)
@given(values=st.lists(st.lists(st.sampled_from(["Yes", "No", 1, 0, True, False, None, "-1"]),
                                min_size=len(CHEXPERT_LABELS), max_size=len(CHEXPERT_LABELS)),
                       min_size=1, max_size=4),
       damage=st.sampled_from(JSON_DAMAGE), data=st.data())
def test_damaged_label_files_load_right_or_fail_with_a_located_data_error(values, damage, data) -> None:
    """A radiologist labels file (``labels=`` on openi-csv) in JSON or JSONL, damaged."""
    with fresh_dir() as folder:
        reports = folder / "reports.csv"
        with reports.open("w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows([OPENI_HEADER, *[[str(n), "normal", "", "", "", "", "Clear.", "Normal."]
                                                       for n in range(1, len(values) + 1)]])
        labels = {str(n): dict(zip(CHEXPERT_LABELS, row, strict=True)) for n, row in enumerate(values, start=1)}
        path = folder / "labels.json"
        text = json.dumps(labels, indent=1)
        path.write_text(text)
        baseline, error = load(load_openi_csv, "openi-csv", reports, labels=str(path))
        assert baseline is not None, error
        report_id = data.draw(st.sampled_from(sorted(labels)), label="report")
        label = data.draw(st.sampled_from(CHEXPERT_LABELS), label="label")

        if damage == "truncate":
            path.write_text(text[: data.draw(st.integers(0, len(text) - 1), label="cut")])
        elif damage == "value":
            path.write_text(json.dumps({**labels, report_id: {**labels[report_id], label: data.draw(JSON_VALUES)}}))
        elif damage == "entry":
            path.write_text(json.dumps({**labels, report_id: data.draw(JSON_VALUES)}))
        elif damage == "duplicate_key":
            path.write_text(text.replace(f'"{label}"', f'"{label}": "Yes", "{label}"', 1))
        elif damage == "deep":
            depth = data.draw(st.sampled_from([50, 5_000, 100_000]), label="depth")
            path.write_text(json.dumps({**labels, report_id: "@"}).replace('"@"', "[" * depth + "]" * depth))
        elif damage == "random_bytes":
            path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
        elif damage == "jsonl":
            path = folder / "labels.jsonl"
            lines = [json.dumps({"id": i, **v}) for i, v in labels.items()]
            cut = data.draw(st.integers(0, len(lines)), label="line")
            lines.insert(cut, data.draw(st.sampled_from(["{", "[]", '{"id": ""}', json.dumps({"id": report_id}),
                                                         "null", '"x"']), label="junk"))
            path.write_text("\n".join(lines))

        bundle, error = load(load_openi_csv, "openi-csv", reports, labels=str(path))
        if error is not None:
            assert str(path) in str(error), error
            if damage == "duplicate_key":
                assert "duplicate key" in str(error), error
            if damage == "jsonl":
                assert error.line is not None, error
        else:
            check_invariants(bundle)
            assert damage not in ("entry", "duplicate_key", "deep", "jsonl", "random_bytes"), f"{damage} loaded"
            if damage == "truncate":
                assert bundle.reports == baseline.reports


@settings(max_examples=N_MAPPING, deadline=None)
@given(lines=st.lists(st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),
    st.builds("{},{}".format, st.sampled_from(["Nodule", "Opacity/lung", "normal", ""]),
              st.sampled_from(["Lung Lesion", "Lung Opacity", "", "No Finding", "Bogus", "Edema;Bogus"])),
    st.just('"unterminated,'), st.just("x" * (FIELD_LIMIT + 1)), st.just("a,b,c,d")), max_size=5),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_damaged_mesh_mapping_files_load_or_fail_with_a_located_data_error(lines, encoding) -> None:
    with fresh_dir() as folder:
        reports = folder / "reports.csv"
        with reports.open("w", newline="", encoding="utf-8") as out:
            csv.writer(out).writerows([OPENI_HEADER, ["1", "Nodule/lung", "", "", "", "", "A nodule.", "Nodule."]])
        mapping = folder / "mapping.csv"
        mapping.write_bytes("\n".join(["mesh,chexpert,note", *lines]).encode(encoding, errors="replace"))
        bundle, error = load(load_openi_csv, "openi-csv", reports, mapping=str(mapping))
        if error is not None:
            assert str(mapping) in str(error) or str(reports) in str(error), error
        else:
            check_invariants(bundle)


# ---------------------------------------------------------------- the data spec and DICOM folders


@settings(max_examples=N_SPEC, deadline=None)
@given(spec=st.one_of(
    st.text(max_size=40),
    st.builds("{}{}{}".format, st.sampled_from(["synthetic", "openi-csv", "series-table", "dicom", "nope", ""]),
              st.sampled_from(["", ":", ":/data/x.csv", ":C:\\x.csv"]),
              st.text(alphabet="?&=,:abcdeilmnoprst0123456789-", max_size=20)),
))
def test_any_data_spec_parses_or_raises_a_value_error(spec: str) -> None:
    """The `data` option: any text is either a list of known sources with known options, or a
    ValueError saying what is wrong (no KeyError, IndexError, ...)."""
    try:
        elements = parse_data_spec(spec)
    except ValueError as exc:
        assert str(exc)
        return
    assert elements and all(e.kind for e in elements)


@settings(max_examples=N_DICOM, deadline=None)
@given(blobs=st.lists(st.binary(max_size=300), max_size=4), cuts=st.lists(st.floats(0, 1), max_size=3))
def test_dicom_folders_with_junk_and_truncated_files_scan_or_fail_with_a_data_error(blobs, cuts) -> None:
    from test_data_sources_tables import write_dicom

    from pipelines.data.dicom_folder import scan_dicom_folder

    with fresh_dir() as folder:
        write_dicom(folder / "whole.dcm", "AX T2 FLAIR", "1.2.3.1")
        whole = (folder / "whole.dcm").read_bytes()
        for index, cut in enumerate(cuts):
            (folder / f"cut{index}.dcm").write_bytes(whole[: int(cut * len(whole))])
        for index, blob in enumerate(blobs):
            (folder / f"junk{index}").write_bytes(blob)
        scan = scan_dicom_folder(folder)  # the intact file is always there: a result, not an error
        assert "AX T2 FLAIR" in dict(scan.descriptions)
        assert scan.dicom_files + scan.non_dicom_files + len(scan.unreadable_files) == 1 + len(cuts) + len(blobs)
