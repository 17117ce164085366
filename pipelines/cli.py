"""Shared command-line plumbing: dataclass fields become --options, errors become one clear line."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, get_type_hints

from pipelines.config import ConfigError
from pipelines.config import parse_bool as parse_bool_value
from pipelines.offline import apply_offline_defaults

SKIP_FIELDS = {"extra_tags"}


def setup_logging() -> None:
    """INFO logs with timestamps; quiet the chatty libraries; offline by default (no Hub calls, no
    telemetry: pipelines.offline)."""
    apply_offline_defaults()
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "alembic", "mlflow.store.db.utils", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One --option per dataclass field (underscores become dashes); defaults come from the class."""
    hints = get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in SKIP_FIELDS:
            continue
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        option = f"--{f.name.replace('_', '-')}"
        if hint is bool:  # `--flag`, or `--flag true|false` (what MLproject commands pass)
            parser.add_argument(option, dest=f.name, type=parse_bool, nargs="?", const=True, default=None,
                                metavar="true|false", help=f"default: {str(default).lower()}")
            continue
        kind = {int: int, float: float}.get(hint, str)
        parser.add_argument(option, dest=f.name, type=kind, default=None, help=f"default: {shown}")


def parse_bool(text: str) -> bool:
    """'true'/'false' (also yes/no, 1/0, on/off; any case) -> bool; anything else is an argparse error."""
    try:
        return parse_bool_value(text, "option")
    except ConfigError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def explicit_options(args: argparse.Namespace, config_cls: type) -> dict[str, Any]:
    """The config fields given on the command line (add_config_arguments leaves the rest None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
            if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace, config_cls: type, base: dict[str, Any]) -> Any:
    """Build the config: class defaults, then `base` (a preset), then options given explicitly."""
    return config_cls(**{**base, **explicit_options(args, config_cls)})


def fail(exc: BaseException) -> int:
    """Print an error as one clear line on stderr; exit status 2."""
    print(f"error: {exc}", file=sys.stderr)
    return 2
