"""The report's sections, one module each; importing this package registers them all.

Each module registers its builder with `@section(key, title, order)`; `order` (not import order)
places it in the report, so adding a section is one new module plus its import here.
"""

from dashboards.sections import (  # noqa: F401  (imported to register the builders)
    generic,
    harmonization,
    impression,
    labeling,
    leaderboard,
    poisoning,
    reader,
    sweeps,
    trajectory,
)
from dashboards.sections.base import (
    SECTIONS,
    FigureItem,
    ReportContext,
    Section,
    SectionSpec,
    ordered_sections,
)

__all__ = ["SECTIONS", "FigureItem", "ReportContext", "Section", "SectionSpec", "ordered_sections", "report_sections"]


def report_sections(ctx: ReportContext) -> list[SectionSpec]:
    """The sections of one report, in order: every registered one, and a generic one per task
    that has none of its own (dashboards.sections.generic)."""
    return sorted([*ordered_sections(), *generic.task_sections(ctx)], key=lambda spec: spec.order)
