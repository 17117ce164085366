"""One rank of a fine-tune started by pipelines.train.launch: torchrun runs
`python -m pipelines.train.rank FOLDER` once per process; each calls train() on the request in
FOLDER, and rank 0 writes back what it returned, or how it failed."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.config import FinetuneConfig
from pipelines.runs.outputs import read_json, write_json_atomic
from pipelines.runs.signals import TrainingInterrupted
from pipelines.runs.sync import EXIT_TRACKING_OUTAGE, TrackingOutageError
from pipelines.train import distributed
from pipelines.train.launch import REQUEST, RESULT, ask_launcher
from pipelines.train.recipe import train


def run_request(folder: Path) -> int:
    """One rank: train() the request in `folder`; rank 0 writes the outcome there. Exit status as finetune's."""
    request = read_json(folder / REQUEST)
    values = request["config"]
    config = FinetuneConfig(**{**values, "lora_targets": tuple(values["lora_targets"])})
    main = distributed.world().main
    try:
        result = train(config, on_checkpoint=ask_launcher(folder) if request["hook"] else None,
                       run_tags=request["run_tags"], parent_run_id=request["parent_run_id"], resume=request["resume"])
        outcome: dict[str, Any] = {"result": {**dataclasses.asdict(result), "output_dir": str(result.output_dir)}}
        code = 0
    except TrainingInterrupted as exc:
        outcome, code = {"failure": "interrupted", "signum": exc.signum, "message": str(exc)}, exc.exit_code
    except TrackingOutageError as exc:
        outcome, code = {"failure": "outage", "message": str(exc)}, EXIT_TRACKING_OUTAGE
    except (ValueError, RuntimeError) as exc:
        failure = "ValueError" if isinstance(exc, ValueError) else "RuntimeError"
        outcome, code = {"failure": failure, "message": str(exc)}, 2
    if main:
        write_json_atomic(json.loads(json.dumps(outcome, default=str)), folder / RESULT)
    return code


if __name__ == "__main__":
    from pipelines.cli import setup_logging

    setup_logging()
    sys.exit(run_request(Path(sys.argv[1])))
