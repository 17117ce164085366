"""One color per model, the same in every figure of a report.

Models are assigned colors in sorted order, so a report's colors depend only on which models it
shows; a model met later (e.g. a reader-study label) takes the next free color.
"""

from __future__ import annotations

from collections.abc import Iterable

# Okabe-Ito, readable with the common color-vision deficiencies; black is kept for text.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#7F7F7F",
)
# Beyond eight models, Plotly's "Dark24"-like extras (still distinct, less accessible).
EXTRA: tuple[str, ...] = ("#1B9E77", "#7570B3", "#E7298A", "#66A61E", "#A6761D", "#666666", "#8C564B")
PAPER_COLOR = "#555555"  # published reference values: neutral grey, dashed


class ColorMap:
    """model name -> hex color, assigned in sorted order of the models given, then on first use."""

    def __init__(self, models: Iterable[str] = ()) -> None:
        self._colors: dict[str, str] = {}
        for model in sorted(set(models)):
            self.color(model)

    def color(self, model: str) -> str:
        if model not in self._colors:
            colors = PALETTE + EXTRA
            self._colors[model] = colors[len(self._colors) % len(colors)]
        return self._colors[model]

    def __contains__(self, model: object) -> bool:
        return model in self._colors

    def items(self) -> list[tuple[str, str]]:
        return list(self._colors.items())


def with_alpha(color: str, alpha: float) -> str:
    """'#RRGGBB' -> 'rgba(r,g,b,alpha)' (CI bands, fills)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
