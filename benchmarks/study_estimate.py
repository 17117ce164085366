"""Wall time of a study's fine-tunes on one GPU, from measured per-token throughput.

Usage:
    python -m benchmarks.study_estimate studies/paper.yaml benchmarks/results/h200-throughput.json

For each fine-tune of the study: training tokens (the plan's examples x epochs x tokens) at the
preset's measured LoRA training tokens/s, plus, at each checkpoint epoch, the test prompts and
the structured answers at the prefill rate (constrained decoding feeds them in a few forward
passes; free decoding is costed at the decode rate) and the impressions' generation budget at
the batched decode rate. Baselines (remote APIs) are not counted. A preset without a
measurement is reported as such.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.config import FinetuneConfig
from pipelines.studies.plan import RunEstimate, estimate_run
from pipelines.studies.spec import load_study


def estimate_study(study_path: str, throughput: dict) -> tuple[list[RunEstimate], list[str]]:
    """Estimates for every fine-tune of the study, and the names of runs without a measurement."""
    study = load_study(study_path)
    estimates, missing = [], []
    for run in study.runs:
        if not isinstance(run.config, FinetuneConfig):
            continue
        rates = throughput["presets"].get(run.config.model)
        if rates is None:
            missing.append(run.name)
            continue
        estimates.append(estimate_run(run.config, run.name, rates))
    return estimates, missing


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import ArgumentParser

    parser = ArgumentParser(description=__doc__)
    parser.add_argument("study", help="a study file, e.g. studies/paper.yaml")
    parser.add_argument("throughput", help="JSON written by python -m benchmarks.throughput --output-json")
    args = parser.parse_args(argv)
    throughput = json.loads(Path(args.throughput).read_text())
    estimates, missing = estimate_study(args.study, throughput)
    print(f"on {throughput['device']} (measured), per fine-tune:")
    print("| run | model | training h | evaluation h | total h |\n|---|---|---:|---:|---:|")
    for e in estimates:
        print(f"| {e.name} | {e.model} | {e.train_hours:.2f} | {e.eval_hours:.2f} | {e.hours:.2f} |")
    print(f"| **all** | | {sum(e.train_hours for e in estimates):.1f} | {sum(e.eval_hours for e in estimates):.1f} "
          f"| **{sum(e.hours for e in estimates):.1f}** |")
    if missing:
        print(f"not estimated (no throughput measured for their model): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
