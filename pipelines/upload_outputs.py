"""Send a fine-tune's local record to the tracking store: what an outage kept from reaching it.

Usage (the fine-tune prints this command when the tracking server stayed away):
    python -m pipelines.upload_outputs RUN_ID --output-dir /path/to/outputs

It logs the metric points and checkpoint runs (adapter, predictions, metrics) the store lacks,
never twice, then sets the run's status to how the fine-tune ended (status.json). Run it again
as often as needed: a complete run is left as it is.
"""
from __future__ import annotations

import sys

from mlflow.exceptions import MlflowException

from pipelines.cli import ArgumentParser, add_tracking_uri_argument, apply_tracking_uri, fail, setup_logging
from pipelines.runs import tracking
from pipelines.runs.outputs import RunOutputs
from pipelines.runs.sync import RunSync, TrackingOutageError

TERMINAL = ("FINISHED", "KILLED", "FAILED")


def upload(run_id: str, output_dir: str) -> str:
    """Sync the run's local folder to the store; returns a one-line summary."""
    outputs = RunOutputs.of(output_dir, run_id)
    if not outputs.root.is_dir():
        raise ValueError(f"no local record of run {run_id} in {outputs.root}; give the fine-tune's --output-dir")
    tracking.connect(must_exist=True)
    with outputs.lock():  # not while a fine-tune still writes it
        sync = RunSync(outputs)
        report = sync.sync_all()
        status = outputs.read_status().get("status")
        current = sync.client.get_run(run_id).info.status
        if status in TERMINAL and current != status:
            sync.client.set_terminated(run_id, status)
    return (f"run {run_id}: sent {report.metric_points} metric point(s); checkpoint runs "
            f"{', '.join(f'epoch {e}: {r}' for e, r in report.checkpoint_runs.items()) or 'none'}; "
            f"status {status if status in TERMINAL else current}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("run_id", help="the fine-tune's MLflow run id")
    parser.add_argument("--output-dir", default="outputs", help="the fine-tune's --output-dir (default: outputs)")
    add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    apply_tracking_uri(args)
    try:
        print(upload(args.run_id, args.output_dir))
        print(tracking.where_to_look(args.run_id))
    except TrackingOutageError as exc:
        print(f"error: the tracking server is still unreachable ({exc}); try again later", file=sys.stderr)
        return 75
    except (ValueError, RuntimeError, MlflowException) as exc:
        return fail(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
