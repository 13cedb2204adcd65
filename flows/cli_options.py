"""What every ``emt`` command module shares: options made from a pydantic model's fields, the model built from
them, and a command's run on Ray. Its own module, so ``flows.cli`` and the command modules it assembles
(``cli_export``, ``cli_training``, ``cli_ablation``) import it and never each other."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from core.settings import parse_config


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel],
                      defaults: Mapping[str, Any] | None = None) -> None:
    """One ``--field-name`` option per scalar field of ``model`` (validated by the model, not argparse);
    ``defaults``: the command's own, where it differs from the model's."""
    defaults = defaults or {}
    for name, field in model.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=defaults.get(name),
            metavar="VALUE",
            help=f"{field.description or ''} (default: {defaults.get(name, field.default)})",
        )


def model_from_args(model: type[BaseModel], args: argparse.Namespace, *, origin: str) -> Any:
    """``model`` from the options given; an option left out keeps the model's default (argparse's is None)."""
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    return parse_config(model, given, origin=origin)


def on_ray(args: argparse.Namespace, work: Callable[[], int]) -> int:
    """A command's run on Ray, after its configuration was checked: from the command line in a watched child
    process, so that a lost Ray cluster is one line and leaves nothing running (``flows.supervise``); called from
    Python (tests, a notebook) in this process, which may hold a Ray session already."""
    if not args.supervise:
        return work()
    from flows.supervise import run_supervised

    return run_supervised(work, command=args.command)
