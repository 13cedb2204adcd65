"""``emt export MANIFEST_URI OUTPUT_URI [--config FILE] [--samples-per-shard N ...]``: a curation run's selected
samples as WebDataset shards in img2dataset's layout, in rank order (``tasks.export``). The options are checked
and the output probed before anything heavy is imported; ``--executor ray`` runs one Ray task per output shard on
``--ray-address`` (else ``RAY_ADDRESS``, else a local Ray)."""

from __future__ import annotations

import argparse

from core.settings import CorpusConfig, load_config, parse_config
from core.storage import check_writable
from flows.cli_options import add_model_options, model_from_args, on_ray
from tasks.export_params import ExportOptions, ExportParams


def _cmd_export(args: argparse.Namespace) -> int:
    options = model_from_args(ExportOptions, args, origin="export options")
    data = {**options.model_dump(), "manifest_uri": args.manifest, "output_uri": args.output}
    if args.config:
        data["storage"] = load_config(CorpusConfig, args.config).storage
    params = parse_config(ExportParams, data, origin="export options")
    check_writable(params.output_uri, params.storage, setting="output_uri")
    return on_ray(args, lambda: _export(params)) if params.executor == "ray" else _export(params)


def _export(params: ExportParams) -> int:
    from tasks.export import export_selected

    if params.executor == "ray":
        from flows.runtime import ray_session

        with ray_session(params.ray_address):
            report = export_selected(params)
    else:
        report = export_selected(params)
    failed = f", {sum(report.failed.values())} not read back {report.failed}" if report.failed else ""
    print(
        f"exported {report.samples} samples into {report.shards} shards at {report.output_uri} "
        f"({report.written} written now, {report.shards - report.written} already there{failed}) "
        f"in {report.seconds:.1f} s"
    )
    return 0


def add_export_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's selected samples as WebDataset shards (img2dataset layout)")
    p.add_argument("manifest", help="the run's manifest URI (.../RUN/manifest.parquet)")
    p.add_argument("output", help="where the shards go: a path or s3://bucket/prefix")
    p.add_argument("--config", help="YAML with a `storage:` section (S3 endpoint and credentials)")
    add_model_options(p, ExportOptions)
    p.set_defaults(run=_cmd_export)
