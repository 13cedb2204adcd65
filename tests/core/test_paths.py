"""Every URI a run records resolves from any working directory: relative local paths become absolute when the
configuration is validated."""

from __future__ import annotations

import os

from core.settings import SourceSpec, absolute_uri


def test_relative_source_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = SourceSpec(name="a", format="webdataset", uri="data/pool/")
    assert spec.uri == f"{tmp_path}/data/pool/"
    glob = SourceSpec(name="b", format="webdataset", uri="./data/{00000..00002}.tar")
    assert glob.uri == f"{tmp_path}/data/{{00000..00002}}.tar"
    assert SourceSpec(name="c", format="lerobot", uri="~/robot").uri == os.path.expanduser("~/robot")


def test_uris_with_a_scheme_are_kept():
    for uri in ("s3://bucket/pool/", "s3://bucket/pool/*.tar", "file:///data/x", "gs://b/p"):
        assert absolute_uri(uri) == uri


def test_curate_output_and_cache_paths_become_absolute(tmp_path, monkeypatch):
    from flows.params import CurateParams

    monkeypatch.chdir(tmp_path)
    params = CurateParams.model_validate(
        {
            "pool": [{"name": "p", "format": "webdataset", "uri": "pool"}],
            "robot": [{"name": "r", "format": "lerobot", "uri": "robot"}],
            "backbone": {"kind": "open_clip", "model": "ViT-B-32"},
            "k": 3,
            "output_uri": "out",
            "cache_uri": "cache/",
        }
    )
    assert (params.output_uri, params.cache_uri) == (f"{tmp_path}/out", f"{tmp_path}/cache/")
    assert params.pool[0].uri == f"{tmp_path}/pool" and params.cache.uri == f"{tmp_path}/cache/"
