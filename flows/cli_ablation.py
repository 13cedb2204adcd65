"""``emt ablation --config FILE`` (the ``ablation`` flow on a YAML of ``AblationParams``) and ``emt ablation
--demo`` (curate the synthetic corpus, then the ablation on tiny models at the demo budget)."""

from __future__ import annotations

import argparse

from core.settings import load_config


def _cmd_ablation(args: argparse.Namespace) -> int:
    if args.demo == bool(args.config):
        raise ValueError("give exactly one of --config FILE or --demo")
    if args.without and not args.demo:
        raise ValueError("--without applies to --demo only (with --config, list the pool you want)")
    if args.demo:
        from flows.demo_ablation import run_ablation_demo

        run_ablation_demo(root=args.root, executor=args.executor or "local", toyworld=args.toyworld,
                          without=args.without)
        return 0
    from flows.ablation_params import AblationParams

    params = load_config(AblationParams, args.config)  # a bad field is one line naming it
    if args.executor:
        params = params.model_copy(update={"executor": args.executor})
    from flows.ablation import ablation
    from flows.demo_ablation import print_ablation

    print_ablation(ablation(params))
    return 0


def add_ablation_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablation", help="does the curation help? none vs random vs curated mid-training, S seeds")
    p.add_argument("--config", help="YAML of the parameters (deploy/ablation.example.yaml)")
    p.add_argument("--demo", action="store_true", help="on the synthetic corpus with tiny models (minutes)")
    p.add_argument("--root", default=None, help="where the demo writes (default: data/demo, data/demo-toyworld)")
    p.add_argument("--toyworld", action="store_true",
                   help="the demo on the toy world: spatial pick tasks, the sources arm, closed-loop success rates")
    p.add_argument("--without", action="append", default=[], metavar="SOURCE",
                   help="the demo with this pool source left out (repeatable): the control, e.g. --toyworld "
                        "--without spatial, where curation has nothing aligned to find")
    p.add_argument("--executor", choices=["auto", "local", "ray"], default=None,
                   help="where the (arm, seed) units run: the config's executor; the demo: local (ray: a local "
                        "Ray, one unit per CPU at once)")
    p.set_defaults(run=_cmd_ablation)
