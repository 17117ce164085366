"""The `openi-csv` data source: Open-i / Indiana University reports as the mirrored indiana_reports.csv.

Layout (one row per report; header names matched ignoring case):

    uid, MeSH, Problems, image, indication, comparison, findings, impression

`uid`, `MeSH`, `findings` and `impression` are required; `comparison` and `indication` are used
when present; `Problems` and `image` are ignored (Problems repeats the MeSH headings). The
record id is the uid as written ("1", "2", ...), the same id openi-xml gives the XML report with
that number. Anonymization tokens (XXXX) are kept as they are: they are part of the text the
models see. Labels come from the MeSH column (terms separated by ';'); see pipelines/data/openi.py
for dropped rows, the labels overlay and the bundle notes.

    openi-csv:/data/indiana_reports.csv
    openi-csv:/data/indiana_reports.csv?labels=/data/radiologist_labels.csv&unlabeled=drop
"""

from __future__ import annotations

from pipelines.data.mesh import split_terms
from pipelines.data.openi import OPENI_OPTIONS, RawReport, build_openi_bundle
from pipelines.data.options import spec_path
from pipelines.data.records import DataBundle
from pipelines.data.sources import DataSource, SourceSpec, register_source
from pipelines.data.tables import read_table

REQUIRED = {"id": "uid", "mesh": "MeSH", "findings": "findings", "impression": "impression"}
OPTIONAL = ("comparison", "indication")


def load_openi_csv(spec: SourceSpec) -> DataBundle:
    """Read indiana_reports.csv into report records."""
    path = spec_path(spec)
    table = read_table(path)
    columns = {field: table.column(name) for field, name in REQUIRED.items()}
    columns.update({field: table.find_column(field) for field in OPTIONAL})
    raws = []
    for row in table.rows:

        def fail(problem: str, field: str, row=row):
            return table.error(problem, row, columns.get(field) or field)

        text = {f: table.value(row, c) if c else "" for f, c in columns.items() if f not in ("id", "mesh")}
        raws.append(
            RawReport(
                id=table.value(row, columns["id"], required=True),
                mesh=split_terms(table.value(row, columns["mesh"])),
                where=f"data row {row.number}",
                fail=fail,
                **text,
            )
        )
    return build_openi_bundle(spec, path, raws)


register_source(
    DataSource(
        name="openi-csv",
        load=load_openi_csv,
        description="Open-i / Indiana University chest X-ray reports from indiana_reports.csv; "
        "labels from the MeSH column (or a radiologist labels file)",
        provides=("reports",),
        needs_path=True,
        options=OPENI_OPTIONS,
    )
)
