"""``emt``: the product's command line.

emt synth ROOT [--seed N --samples-per-source N ...]   generate the synthetic corpus at ROOT (any URI)
emt survey --config corpus.yaml                         read every source and summarise it
emt demo [--s3]                                         the main job on embedded defaults
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from botocore.exceptions import BotoCoreError
from pydantic import BaseModel

from core.settings import ConfigError, CorpusConfig, StorageConfig, load_config, parse_config
from synth import SynthConfig


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One ``--field-name`` option per scalar field of ``model`` (validated by the model, not argparse)."""
    for name, field in model.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            metavar="VALUE",
            help=f"{field.description or ''} (default: {field.default})",
        )


def model_from_args(model: type[BaseModel], args: argparse.Namespace, *, origin: str) -> Any:
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    return parse_config(model, given, origin=origin)


def _storage(path: str | None) -> StorageConfig | None:
    return load_config(CorpusConfig, path).storage if path else None


def _cmd_synth(args: argparse.Namespace) -> int:
    from synth import generate_corpus

    config = model_from_args(SynthConfig, args, origin="synth options")
    info = generate_corpus(args.root, config, _storage(args.config))
    print(f"corpus at {info.root}: {info.counts}")
    return 0


def _cmd_survey(args: argparse.Namespace) -> int:
    from flows.demo import print_survey

    corpus = load_config(CorpusConfig, args.config)
    print_survey(corpus)
    return 0


def _cmd_curate(args: argparse.Namespace) -> int:
    from flows.curate import curate
    from flows.demo import print_report
    from flows.params import CurateParams

    params = load_config(CurateParams, args.config)
    report = curate(params)
    print_report(report, params.storage)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tasks.report import build_report

    result = build_report(args.manifest, _storage(args.config), per_set=args.per_set)
    print(f"report: {result.html_uri}\nmetrics: {result.metrics_uri}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    run_demo(root=args.root, s3=args.s3, synth=model_from_args(SynthConfig, args, origin="demo options"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emt", description="EmbodiedMidtrain: curate robot-ready VL data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the deterministic synthetic corpus")
    p.add_argument("root", help="where to write it: a path or s3://bucket/prefix")
    p.add_argument("--config", help="YAML with a `storage:` section (S3 endpoint and credentials)")
    add_model_options(p, SynthConfig)
    p.set_defaults(run=_cmd_synth)

    p = sub.add_parser("survey", help="read every source of a corpus config and summarise it")
    p.add_argument("--config", required=True, help="YAML with `storage`, `pool` and `robot` sections")
    p.set_defaults(run=_cmd_survey)

    p = sub.add_parser("curate", help="curate a pool against robot data (a Prefect flow over Ray Data)")
    p.add_argument("--config", required=True, help="YAML of the curate parameters (see README)")
    p.set_defaults(run=_cmd_curate)

    p = sub.add_parser("report", help="rebuild the report (MMD, diversity, figures, HTML) of an existing run")
    p.add_argument("manifest", help="the run's manifest URI (.../RUN/manifest.parquet)")
    p.add_argument("--config", help="YAML with a `storage:` section (S3 endpoint and credentials)")
    p.add_argument("--per-set", type=int, default=500, help="embeddings sampled per set (default: 500)")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser("demo", help="run the main job on embedded defaults")
    p.add_argument(
        "--root", default=None, help="where the demo writes (default: data/demo, or s3://emt-demo/demo with --s3)"
    )
    p.add_argument("--s3", action="store_true", help="run against an embedded S3 server on loopback")
    add_model_options(p, SynthConfig)
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ValueError, FileExistsError) as err:  # bad configuration or input, before work started
        print(f"emt {args.command}: {err}", file=sys.stderr)
        return 2
    except BotoCoreError as err:  # object storage unreachable or credentials missing: say so, not a traceback
        print(f"emt {args.command}: object storage: {err} (check `storage:` or the AWS variables)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
