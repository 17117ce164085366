"""The look every figure shares: layout, titles with units, hover text that names the run."""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence

import plotly.graph_objects as go

from dashboards.colors import PAPER_COLOR
from dashboards.paper import Published

FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
ROW_HEIGHT = 30  # px per run on a horizontal chart
GRID = "#E5E5E5"


def layout(fig: go.Figure, title: str, height: int = 420, legend: bool = True, panels: bool = False) -> go.Figure:
    """White background, left-aligned title, room for axis titles, legend on top (above the panel
    titles when the figure has subplots)."""
    top = (130 if panels else 90) if legend else (80 if panels else 60)
    plot_height = max(height - top - 60, 100)
    # Legend bottom 46 px above the plot area: clear of the panel titles (about 25 px) below it
    # and of the figure title pinned to the top edge above it.
    legend_y = 1 + (46 if panels else 8) / plot_height
    fig.update_layout(
        template="plotly_white",
        title={
            "text": title,
            "x": 0,
            "xanchor": "left",
            "font": {"size": 17},
            "y": 1 - 12 / height,
            "yanchor": "top",
            "yref": "container",
        },
        font={"family": FONT, "size": 12},
        height=height,
        margin={"l": 70, "r": 30, "t": top, "b": 60},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": legend_y, "x": 0, "xanchor": "left"},
        hoverlabel={"font": {"family": FONT}},
    )
    fig.update_xaxes(gridcolor=GRID, zerolinecolor="#BBBBBB")
    fig.update_yaxes(gridcolor=GRID, zerolinecolor="#BBBBBB")
    return fig


# Characters of 12 px text that fit across the plot area of a report figure at 1,400 px (about
# 900 px once the run names' margin is taken): a title is wrapped to its panel's share.
PANEL_CHARACTERS = 120


def panel_title(text: str, panels: int) -> str:
    """`text` broken into lines (Plotly's <br>) that fit one of `panels` side-by-side panels."""
    return "<br>".join(textwrap.wrap(text, max(12, PANEL_CHARACTERS // max(panels, 1)))) or text


def bar_text_positions(values, span: float) -> list[str]:
    """Value labels inside long bars, outside short ones (a zero-length bar still shows its number)."""
    return ["inside" if v == v and v is not None and v > 0.3 * span else "outside" for v in values]


def runs_height(n_rows: int, minimum: int = 300, extra: int = 170) -> int:
    """Height of a chart with one row per run."""
    return max(minimum, extra + ROW_HEIGHT * n_rows)


def hover(title: str, lines: Sequence[str]) -> str:
    """A hovertemplate: the run label in bold, then one fact per line; no trace name box."""
    return "<b>" + title + "</b><br>" + "<br>".join(lines) + "<extra></extra>"


def escape(text: object) -> str:
    """Text put into Plotly labels/hover (which read a subset of HTML) or into the page."""
    return html.escape(str(text), quote=True)


def published_dash(item: Published) -> str:
    """One line style per published system, the same in every figure: the paper's model dashed,
    GPT-4o dotted."""
    return "dot" if "GPT" in item.system else "dash"


def add_published_lines(
    fig: go.Figure,
    values: Sequence[Published],
    axis: str = "x",
    row: int | None = None,
    col: int | None = None,
) -> None:
    """Grey reference lines at published values (vertical for axis "x"). They carry no text on the
    plot, where it would cover bars; `add_published_legend` names them and the caption gives the
    numbers."""
    kwargs = {"row": row, "col": col} if row is not None else {}
    for item in values:
        line = {"color": PAPER_COLOR, "dash": published_dash(item), "width": 1.6}
        if axis == "x":
            fig.add_vline(x=item.value, line=line, **kwargs)
        else:
            fig.add_hline(y=item.value, line=line, **kwargs)


def add_published_legend(fig: go.Figure, values: Sequence[Published]) -> None:
    """One legend entry per published system drawn (a line sample, nothing plotted)."""
    for system in dict.fromkeys(v.system for v in values):
        item = next(v for v in values if v.system == system)
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                name=system,
                hoverinfo="skip",
                line={"color": PAPER_COLOR, "dash": published_dash(item), "width": 1.6},
            )
        )


def fmt_p(p: float | None) -> str:
    """p-values as a reader expects: 3 significant digits, '< 0.001' below that."""
    if p is None or p != p:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
