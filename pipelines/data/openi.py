"""What the two Open-i sources (openi-csv, openi-xml) share: options, labels and record building.

Both layouts yield the same raw reports (id, four sections, MeSH terms); this module turns them
into ReportRecords:

- a report with neither FINDINGS nor IMPRESSION text is dropped (counted);
- a report without IMPRESSION is kept with impression "" for the labeling task and counted, so
  the impression task can leave it out (the paper removed 6 such reports of 3,665);
- labels come from the MeSH terms through the mapping file (pipelines/data/mesh.py), unless a
  radiologist labels file (`?labels=...`) lists the report: those labels take precedence, and
  `?unlabeled=drop` keeps only the reports the file lists (the paper's 3,665 annotated reports).

Bundle notes (all values are strings; counts are decimal):
    reports_rows                  reports read from the file(s)
    reports_loaded                records returned
    reports_dropped_no_text       dropped: no findings and no impression
    reports_without_impression    kept with impression "" (exclude them from the impression task)
    reports_without_findings      kept with findings ""
    reports_labels_from_mesh      labels derived from MeSH terms
    reports_labels_from_table     labels taken from the labels file (0 without one)
    reports_dropped_unlabeled     dropped by unlabeled=drop
    reports_no_finding_disagreements  labels-file rows whose own No Finding was re-derived
    reports_mesh_mapping          the mapping file used
    reports_mesh_unmapped         most frequent unmapped headings with counts (only when any)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.errors import DataError
from pipelines.data.labels import POLICY_OPTIONS, LabelPolicy, read_labels
from pipelines.data.mesh import DEFAULT_MAPPING, load_mapping, unmapped_summary
from pipelines.data.options import choice_option, path_option, text_option
from pipelines.data.records import DataBundle, ReportRecord, labels_from_findings
from pipelines.data.sources import SourceSpec

log = logging.getLogger(__name__)

OPENI_OPTIONS = {
    "mapping": "MeSH -> CheXpert mapping file (default: the shipped pipelines/data/mesh_to_chexpert.csv)",
    "unmapped": "MeSH headings the mapping does not list: warn (default; counted in the notes) or error",
    "labels": "radiologist labels (CSV/XLSX table, JSON file or folder of <id>.json) that take "
    "precedence over the MeSH-derived labels for the report ids they list",
    "labels_id": "id column (or JSON key) of the labels file (default: id)",
    "unlabeled": "with labels=: reports the labels file lacks keep their MeSH labels (mesh, default) "
    "or are dropped (drop)",
    **POLICY_OPTIONS,
}


@dataclass(frozen=True)
class RawReport:
    """One report as read from a file; `fail(problem, field)` builds an error located at it.

    `field` is one of "id", "mesh", "comparison", "indication", "findings", "impression".
    """

    id: str
    comparison: str
    indication: str
    findings: str
    impression: str
    mesh: list[str]
    where: str
    fail: Callable[[str, str], DataError]


def build_openi_bundle(spec: SourceSpec, path: Path, raws: list[RawReport]) -> DataBundle:
    """Validate the raw reports, attach labels and return the bundle (see the module docstring)."""
    first_seen: dict[str, str] = {}
    for raw in raws:
        if raw.id in first_seen:
            raise raw.fail(f"duplicate id {raw.id!r} (first at {first_seen[raw.id]})", "id")
        first_seen[raw.id] = raw.where
    if not raws:
        raise DataError(path, "no reports found")

    policy = LabelPolicy.from_spec(spec)  # validates the policy options even without labels=
    unlabeled = choice_option(spec, "unlabeled", ("mesh", "drop"))
    strict = choice_option(spec, "unmapped", ("warn", "error")) == "error"
    mapping = load_mapping(path_option(spec, "mapping") or DEFAULT_MAPPING)
    table = None
    labels_path = path_option(spec, "labels")
    if labels_path is not None:
        id_key = text_option(spec, "labels_id", "id")
        table = read_labels(labels_path, id_key, policy)
        unknown = [i for i in table.labels if i not in first_seen]
        if unknown:
            raise DataError(
                table.path,
                f"{len(unknown)} labeled report id(s) are not in {path}, e.g. "
                f"{unknown[:5]}; remove them or check the id column",
                field=id_key,
            )

    counts: Counter[str] = Counter()
    unmapped_terms: list[str] = []
    records = []
    for raw in raws:
        if not raw.findings and not raw.impression:
            counts["dropped_no_text"] += 1
            continue
        if table is not None and raw.id in table.labels:
            labels = table.labels[raw.id]
            counts["labels_from_table"] += 1
        elif table is not None and unlabeled == "drop":
            counts["dropped_unlabeled"] += 1
            continue
        else:
            if not raw.mesh:
                raise raw.fail("empty value: no MeSH terms to derive labels from", "mesh")
            positive, unmapped = mapping.labels_for(raw.mesh)
            if unmapped and strict:
                raise raw.fail(
                    f"MeSH term {unmapped[0]!r} matches no row of {mapping.path} "
                    "(add a row, or drop the option unmapped=error)",
                    "mesh",
                )
            unmapped_terms += unmapped
            labels = labels_from_findings(positive)
            counts["labels_from_mesh"] += 1
        counts["without_impression"] += not raw.impression
        counts["without_findings"] += not raw.findings
        records.append(
            ReportRecord(
                id=raw.id,
                findings=raw.findings,
                impression=raw.impression,
                labels=labels,
                comparison=raw.comparison,
                indication=raw.indication,
            )
        )
    if not records:
        raise DataError(
            path,
            f"no usable reports among {len(raws)}: {counts['dropped_no_text']} have neither "
            f"findings nor impression, {counts['dropped_unlabeled']} are not in the labels file",
        )

    notes = {"reports_rows": str(len(raws)), "reports_loaded": str(len(records))}
    for key in (
        "dropped_no_text",
        "without_impression",
        "without_findings",
        "labels_from_mesh",
        "labels_from_table",
    ):
        notes[f"reports_{key}"] = str(counts[key])
    if table is not None:
        notes["reports_dropped_unlabeled"] = str(counts["dropped_unlabeled"])
        notes["reports_no_finding_disagreements"] = str(table.disagreements)
        notes["reports_labels_file"] = str(table.path)
    notes["reports_mesh_mapping"] = str(mapping.path)
    if unmapped_terms:
        notes["reports_mesh_unmapped"] = unmapped_summary(unmapped_terms)
        log.warning(
            "%s: %d MeSH term(s) match no row of %s and add no label: %s",
            path,
            len(unmapped_terms),
            mapping.path,
            notes["reports_mesh_unmapped"],
        )
    log.info("%s: %s", path, ", ".join(f"{k}={v}" for k, v in notes.items() if v.isdigit()))
    return DataBundle(source=str(spec), reports=records, notes=notes)
