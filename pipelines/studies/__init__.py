"""Studies: a declarative list of fine-tunes and baselines (studies/*.yaml), planned, run in order,
resumed, and shared between workers through a claims table."""
from pipelines.studies.claims import ClaimStore, default_claims_url, default_worker_id
from pipelines.studies.plan import estimate_cost, format_plan, run_states
from pipelines.studies.runner import StudyReport, run_study
from pipelines.studies.spec import Study, StudyError, StudyRun, load_study, parse_overrides

__all__ = [
    "ClaimStore", "Study", "StudyError", "StudyReport", "StudyRun", "default_claims_url", "default_worker_id",
    "estimate_cost", "format_plan", "load_study", "parse_overrides", "run_states", "run_study",
]
