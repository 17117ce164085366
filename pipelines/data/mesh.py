"""MeSH index terms of Open-i reports -> CheXpert labels, through an editable mapping file.

An Open-i report is indexed with MeSH-style terms such as ``Cardiomegaly/mild`` or
``Opacity/lung/base/left``: a heading, then '/'-separated qualifiers (the CSV's MeSH column
joins them with ';'). The mapping file (default: mesh_to_chexpert.csv next to this module;
its header comment documents the format and the matching rule) lists headings, optionally with
qualifiers, and the CheXpert label(s) each one means. The most specific matching row decides a
term's labels; a term that no row matches is "unmapped": it adds no label and is reported.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.errors import DataError
from pipelines.vocabulary import CHEXPERT_LABELS

DEFAULT_MAPPING = Path(__file__).with_name("mesh_to_chexpert.csv")
MAPPING_COLUMNS = ("mesh", "chexpert", "note")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def split_terms(mesh_field: str) -> list[str]:
    """The terms of a MeSH field: ``'normal'`` -> ['normal']; ``'A/x;B'`` -> ['A/x', 'B']."""
    return [t.strip() for t in mesh_field.split(";") if t.strip()]


def parse_term(term: str) -> tuple[str, frozenset[str]]:
    """Normalized heading and qualifier set of one term (case and repeated spaces ignored)."""
    heading, *qualifiers = term.split("/")
    return _norm(heading), frozenset(q for q in map(_norm, qualifiers) if q)


@dataclass(frozen=True)
class MeshRule:
    """One row of the mapping file."""

    pattern: str
    heading: str
    qualifiers: frozenset[str]
    labels: tuple[str, ...]
    line: int


@dataclass
class MeshMapping:
    """The loaded mapping; `labels_for_term` applies the most-specific-row rule."""

    path: Path
    rules: dict[str, list[MeshRule]] = field(default_factory=dict)
    _memo: dict[str, frozenset[str] | None] = field(default_factory=dict, repr=False)

    def labels_for_term(self, term: str) -> set[str] | None:
        """Labels one term means ({} for a reviewed non-finding), or None when no row matches."""
        if term not in self._memo:  # a corpus repeats a few hundred distinct terms thousands of times
            self._memo[term] = self._match(term)
        found = self._memo[term]
        return None if found is None else set(found)

    def _match(self, term: str) -> frozenset[str] | None:
        heading, qualifiers = parse_term(term)
        matching = [r for r in self.rules.get(heading, ()) if r.qualifiers <= qualifiers]
        if not matching:
            return None
        most = max(len(r.qualifiers) for r in matching)
        return frozenset(label for r in matching if len(r.qualifiers) == most for label in r.labels)

    def labels_for(self, terms: list[str]) -> tuple[set[str], list[str]]:
        """Positive CheXpert labels of a report's terms, and the terms no row matched."""
        positive: set[str] = set()
        unmapped = []
        for term in terms:
            labels = self.labels_for_term(term)
            if labels is None:
                unmapped.append(term)
            else:
                positive |= labels
        return positive, unmapped


def unmapped_summary(terms: list[str], limit: int = 10) -> str:
    """``'Heading A (12); Heading B (3); ...'``: the most frequent unmapped headings."""
    counts = Counter(term.split("/")[0].strip() for term in terms)
    text = "; ".join(f"{h} ({n})" for h, n in counts.most_common(limit))
    return text + (f"; ... {len(counts) - limit} more" if len(counts) > limit else "")


def load_mapping(path: Path = DEFAULT_MAPPING) -> MeshMapping:
    """Read and check a mapping file; a malformed row raises a DataError naming its line."""
    path = Path(path).expanduser()
    stat = path.stat() if path.is_file() else None
    if stat is None:
        raise DataError(path, "MeSH mapping file not found")
    return _load_mapping(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_mapping(path: Path, mtime_ns: int, size: int) -> MeshMapping:
    # Cached by modification time and size, so an edited file is re-read.
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from None
    canonical = {label.casefold(): label for label in CHEXPERT_LABELS}
    mapping = MeshMapping(path)
    seen: dict[tuple[str, frozenset[str]], int] = {}
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\x00" in line:
            raise DataError(path, "NUL character (a binary or UTF-16 file?); save the mapping as UTF-8 text",
                            line=number)
        try:
            cells = [c.strip() for c in next(csv.reader([line]))]
        except csv.Error as exc:
            raise DataError(path, f"not a readable CSV line ({exc})", line=number) from None
        if not header_seen:
            if tuple(c.casefold() for c in cells[:2]) != MAPPING_COLUMNS[:2]:
                raise DataError(
                    path, f"the header must be {','.join(MAPPING_COLUMNS)}, got {line!r}", line=number
                )
            header_seen = True
            continue
        if len(cells) > len(MAPPING_COLUMNS):
            raise DataError(
                path,
                f"{len(cells)} fields, expected at most {len(MAPPING_COLUMNS)}; "
                "quote a heading or note that contains a comma",
                line=number,
            )
        pattern, labels_text = (cells + ["", ""])[:2]
        if not pattern:
            raise DataError(path, "empty MeSH heading", line=number, field="mesh")
        labels = []
        for label in filter(None, (p.strip() for p in labels_text.split(";"))):
            if label.casefold() == "no finding":
                raise DataError(
                    path,
                    "'No Finding' is derived (Yes when no pathology label is present); "
                    "leave chexpert empty for a non-finding",
                    line=number,
                    field="chexpert",
                )
            if label.casefold() not in canonical:
                raise DataError(
                    path,
                    f"unknown CheXpert label {label!r}; valid: {list(CHEXPERT_LABELS)}",
                    line=number,
                    field="chexpert",
                )
            labels.append(canonical[label.casefold()])
        heading, qualifiers = parse_term(pattern)
        if (heading, qualifiers) in seen:
            raise DataError(
                path,
                f"{pattern!r} is listed twice (first on line {seen[heading, qualifiers]})",
                line=number,
                field="mesh",
            )
        seen[heading, qualifiers] = number
        rule = MeshRule(pattern, heading, qualifiers, tuple(labels), number)
        mapping.rules.setdefault(heading, []).append(rule)
    if not mapping.rules:
        raise DataError(path, "the MeSH mapping file has no rows")
    return mapping
