"""The `synthetic` data source: both datasets generated from a seed, so everything runs offline.

    synthetic                               3,659 reports and 1,395 series (the paper's sizes), seed 0
    synthetic?reports=200&series=100&seed=1

Reports come from `synthetic_cxr` (labeling policy in its docstring), series descriptions from
`synthetic_mri` (classing policy in its docstring).
"""
from __future__ import annotations

from pipelines.data.records import DataBundle
from pipelines.data.sources import DataSource, SourceSpec, int_option, register_source
from pipelines.data.synthetic_cxr import generate_reports
from pipelines.data.synthetic_mri import generate_series

# The paper's dataset sizes: 3,665 Open-i reports less 6 without an impression; 1,395 unique
# MRI series descriptions.
DEFAULT_REPORTS = 3659
DEFAULT_SERIES = 1395
DEFAULT_SEED = 0


def load_synthetic(spec: SourceSpec) -> DataBundle:
    """Generate the reports and series a `synthetic[?reports=N&series=M&seed=S]` spec asks for."""
    n_reports = int_option(spec, "reports", DEFAULT_REPORTS)
    n_series = int_option(spec, "series", DEFAULT_SERIES)
    seed = int_option(spec, "seed", DEFAULT_SEED)
    return DataBundle(
        source=str(spec),
        reports=generate_reports(n_reports, seed),
        series=generate_series(n_series, seed),
        notes={
            "synthetic_seed": str(seed),
            "synthetic_reports": str(n_reports),
            "synthetic_series": str(n_series),
        },
    )


SYNTHETIC = register_source(
    DataSource(
        name="synthetic",
        load=load_synthetic,
        description="seeded synthetic Open-i-style CXR reports and vendor-style MRI series descriptions",
        provides=("reports", "series"),
        options={
            "reports": f"number of chest X-ray reports (default {DEFAULT_REPORTS})",
            "series": f"number of unique MRI series descriptions (default {DEFAULT_SERIES})",
            "seed": f"random seed for both generators (default {DEFAULT_SEED})",
        },
    )
)
