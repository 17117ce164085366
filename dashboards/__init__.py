"""Plotly reports of the clinical SLM lab: an analysis (tables from `analysis/`) as one HTML page.

Modules: ``colors`` (one color per model across every figure), ``runs`` (run labels), ``paper``
(the published numbers and when a run is comparable to them), ``options`` (what a report shows
and how single figures get Plotly's JavaScript), ``inputs`` (what a report reads:
analysis tables, run params, predictions, sweeps, reader study), ``style`` (shared figure layout
and hover text), ``sections`` (one builder per report section, in a registry), ``page`` (the
self-contained HTML), ``report`` (build, write, log). Entry point: ``python -m dashboards``.
"""
