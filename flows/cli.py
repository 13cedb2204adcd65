"""``emt``: the product's command line.

emt synth ROOT [--seed N --samples-per-source N ...]   generate the synthetic corpus at ROOT (any URI)
emt survey --config corpus.yaml                         read every source and summarise it
emt curate --config curate.yaml                         curate a pool (Prefect flow over Ray Data)
emt report MANIFEST_URI                                 rebuild a run's report
emt export MANIFEST_URI OUTPUT_URI                      the selection as WebDataset shards (img2dataset layout)
emt midtrain|finetune|pipeline --config FILE            train a VLM / a VLA, or the whole pipeline (MLflow runs)
emt demo [--s3] [--curate-only]                         the whole pipeline on embedded defaults, tiny models
emt ablation --config FILE | --demo                     does the curation help? none vs random vs curated, S seeds
emt stack up|down|status [--root .stack ...]            the local stack: S3, Prefect server + worker, MLflow, Ray

A command checks its configuration and reaches its storage before it imports the heavy stack (torch, Ray,
Prefect, MLflow), so a mistake is one line on stderr within a second or two, never a traceback after the
imports; its inputs (sources, models, manifests, robot episodes) are read before Prefect and Ray start
(``flows.input_checks``); every expected failure exits 2 with one line.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from botocore.exceptions import BotoCoreError

from core.errors import ClusterLost
from core.settings import (
    ConfigError,
    CorpusConfig,
    StorageConfig,
    load_config,
)
from core.storage import check_writable
from flows.cli_ablation import add_ablation_command
from flows.cli_export import add_export_command
from flows.cli_options import add_model_options, model_from_args, on_ray
from flows.cli_training import add_training_commands
from synth import SynthConfig

if TYPE_CHECKING:
    from flows.params import CurateParams

# What the base install lacks: a command that needs it says which extra to install (tqdm: progress, as in export).
_CURATE_STACK = {"torch", "torchvision", "ray", "prefect", "mlflow", "transformers", "open_clip", "av", "pandas"}
_CURATE_STACK |= {"tqdm"}
# The demo's corpus carries web junk at a rate like real pools', for its filters to remove (--junk-rate 0: none).
DEMO_SYNTH = {"junk_rate": 0.05}


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
    from flows.params import CurateParams  # pydantic models alone: no torch, Ray or Prefect

    params = load_config(CurateParams, args.config)
    for setting in ("output_uri", "cache_uri"):  # probed (write and delete an object) before any heavy import
        if (uri := getattr(params, setting)) is not None:
            check_writable(uri, params.storage, setting=setting)
    from flows.input_checks import check_curate

    check_curate(params)  # sources, backbone: one line now rather than a traceback after Prefect's start-up
    return on_ray(args, lambda: _curate_and_report(params))


def _curate_and_report(params: CurateParams) -> int:
    from flows.curate import curate
    from flows.demo import print_report

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
    from flows.demo_training import run_pipeline_demo

    demo = run_demo if args.curate_only else run_pipeline_demo
    synth = model_from_args(SynthConfig, args, origin="demo options")

    def run() -> int:
        demo(root=args.root, s3=args.s3, synth=synth)
        return 0

    return on_ray(args, run)


def _cmd_stack(args: argparse.Namespace) -> int:
    import time

    from infra import stack

    config = model_from_args(stack.StackConfig, args, origin="stack options")
    if args.action == "up":
        start = time.monotonic()
        try:
            services = stack.up(config)
        except stack.StackStartError as err:  # one line; what it had started is stopped already
            print(f"emt stack: {err}", file=sys.stderr)
            return 1
        rss = sum(stack.rss_mib(s) for s in services.values())
        print(f"stack up in {time.monotonic() - start:.0f} s, {rss:.0f} MiB resident")
        print(stack.describe(config, services))
    elif args.action == "down":
        print(f"stopped: {', '.join(stack.down(config)) or 'nothing was running'}")
    else:
        rows = stack.status(config)
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        if not rows:
            print(f"no stack under {config.home}")
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
    add_export_command(sub)

    p = sub.add_parser("demo", help="curate -> midtrain -> finetune on embedded defaults and tiny models")
    p.add_argument(
        "--root", default=None, help="where the demo writes (default: data/demo, or s3://emt-demo/demo with --s3)"
    )
    p.add_argument("--s3", action="store_true", help="run against an embedded S3 server on loopback")
    p.add_argument("--curate-only", action="store_true", help="stop after curation (no training)")
    add_model_options(p, SynthConfig, DEMO_SYNTH)
    p.set_defaults(run=_cmd_demo)
    add_training_commands(sub)
    add_ablation_command(sub)

    from infra.stack import StackConfig

    p = sub.add_parser("stack", help="start, stop or inspect the local stack (all services on 127.0.0.1)")
    p.add_argument("action", choices=["up", "down", "status"])
    add_model_options(p, StackConfig)
    p.set_defaults(run=_cmd_stack)
    return parser


def one_line(message: str) -> str:
    """A multi-line message (a validation error lists one field per line) as one line."""
    head, *rest = [line.strip() for line in str(message).splitlines() if line.strip()] or [""]
    return " ".join([head, "; ".join(rest)]).strip()


def exit_before_native_teardown(code: int) -> NoReturn:
    """Exit with ``code`` once Python's own clean-up (every ``atexit`` handler: Prefect's, Ray's, logging's) has run,
    without C++ static destructors. Arrow's thread pool can abort the interpreter's teardown just after a Parquet
    read ("terminate called without an active exception", exit -6; apache/arrow#34314): 3 of 40 ``emt finetune``
    exits on a bad robot set did here, turning its one-line error into a crash."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    # Prefect's ephemeral API (a flow run without a server) took over its 20 s default to start on a loaded
    # machine and failed the run; a user's own value wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    args = build_parser().parse_args(argv)
    args.supervise = argv is None  # the command line itself: see on_ray
    try:
        return args.run(args)
    except (ConfigError, ValueError, FileExistsError) as err:  # bad configuration or input, before work started
        message = one_line(str(err))
    except ClusterLost as err:  # raised where no supervising parent reports it (see flows/supervise.py)
        print(f"emt {args.command}: {err}", file=sys.stderr)
        return 1
    except BotoCoreError as err:  # object storage unreachable or credentials missing: say so, not a traceback
        message = f"object storage: {one_line(str(err))} (check `storage:` or the AWS variables)"
    except ModuleNotFoundError as err:
        if err.name not in _CURATE_STACK:
            raise
        message = f"needs the curation stack ({err.name} is missing): pip install 'embodied-midtrain[curate]'"
    print(f"emt {args.command}: {message}", file=sys.stderr)
    if args.supervise:  # the command line: the check read inputs, nothing was started that needs tearing down
        exit_before_native_teardown(2)
    return 2


if __name__ == "__main__":
    sys.exit(main())
