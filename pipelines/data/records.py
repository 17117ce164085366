"""Typed records that every data source produces and every task consumes."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from pipelines.vocabulary import LABEL_KEYS, NO, PATHOLOGY_LABELS, SERIES_CLASSES, YES

SECTION_ORDER = ("comparison", "indication", "findings", "impression")


@dataclass(frozen=True)
class ReportRecord:
    """One chest X-ray report with its 14 Yes/No labels.

    `labels` maps every key of LABEL_KEYS to "Yes" or "No"; sections may be empty strings.
    """

    id: str
    findings: str
    impression: str
    labels: dict[str, str]
    comparison: str = ""
    indication: str = ""

    def __post_init__(self) -> None:
        missing = [k for k in LABEL_KEYS if k not in self.labels]
        if missing:
            raise ValueError(f"report {self.id!r}: labels lack keys {missing}")
        bad = {k: v for k, v in self.labels.items() if v not in (YES, NO)}
        if bad:
            raise ValueError(f"report {self.id!r}: labels must be 'Yes' or 'No', got {bad}")

    def sections(self, with_impression: bool = True) -> list[tuple[str, str]]:
        """(HEADER, text) pairs in report order, empty sections left out."""
        names = SECTION_ORDER if with_impression else SECTION_ORDER[:-1]
        return [(n.upper(), getattr(self, n).strip()) for n in names if getattr(self, n).strip()]

    def text(self, with_impression: bool = True) -> str:
        """The report as COMPARISON / INDICATION / FINDINGS / IMPRESSION sections."""
        return "\n".join(f"{h}: {t}" for h, t in self.sections(with_impression))


@dataclass(frozen=True)
class SeriesRecord:
    """One MRI DICOM series description (tag 0008,103E) with its harmonized class."""

    id: str
    description: str
    label: str

    def __post_init__(self) -> None:
        if self.label not in SERIES_CLASSES:
            raise ValueError(
                f"series {self.id!r}: class {self.label!r} is not one of {list(SERIES_CLASSES)}"
            )


@dataclass
class DataBundle:
    """What a data source yields: reports (labeling + impression) and series (harmonization)."""

    source: str
    reports: list[ReportRecord] = field(default_factory=list)
    series: list[SeriesRecord] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Content hash of every record (sha256, first 16 hex digits); changes iff the data does."""
        digest = hashlib.sha256()
        for rec in [*self.reports, *self.series]:
            digest.update(json.dumps(asdict(rec), sort_keys=True).encode())
        return digest.hexdigest()[:16]


def labels_from_findings(positive: set[str]) -> dict[str, str]:
    """Build the 14-key label dict from the set of positive CheXpert labels.

    "No Finding" is Yes exactly when no pathology label is positive (devices do not count).
    """
    unknown = positive - set(LABEL_KEYS)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}; valid: {list(LABEL_KEYS)}")
    labels = {k: (YES if k in positive else NO) for k in LABEL_KEYS}
    labels["No Finding"] = NO if positive & set(PATHOLOGY_LABELS) else YES
    return labels
