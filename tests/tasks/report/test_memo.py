"""The report's figures kept by their inputs: a rebuilt report draws nothing again, another selection re-draws the
map from its kept coordinates, and nothing is read back when keeping is off."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from core.manifest import read_manifest, read_sidecar, write_manifest
from tasks.report import build_report, figures
from tasks.report.memo import FOLDER


def _memo_folder(manifest_uri: str) -> Path:
    return Path(read_sidecar(manifest_uri)["cache_uri"]) / FOLDER


def _refuse(name: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"{name} ran: the kept result should have been read back")
    return refused


def _pngs(result) -> dict[str, bytes]:
    return {name: Path(uri).read_bytes() for name, uri in result.figure_uris.items()}


def test_a_rebuilt_report_reads_every_figure_back(fake_run: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(_memo_folder(fake_run), ignore_errors=True)
    first = build_report(fake_run, out_uri=str(tmp_path / "first"), per_set=12, examples=4)
    kept = sorted(p.name for p in _memo_folder(fake_run).iterdir())
    assert len([k for k in kept if k.endswith(".png")]) == len(first.figure_uris) and any(
        k.startswith("tsne-") for k in kept)
    monkeypatch.setattr(figures, "_png", _refuse("drawing"))
    monkeypatch.setattr(figures, "tsne_2d", _refuse("t-SNE"))
    again = build_report(fake_run, out_uri=str(tmp_path / "again"), per_set=12, examples=4)
    assert _pngs(again) == _pngs(first)
    assert again.metrics["mmd2"] == first.metrics["mmd2"]


def test_another_selection_redraws_the_map_from_kept_coordinates(fake_run: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_report(fake_run, out_uri=str(tmp_path / "first"), per_set=12, examples=0)
    table = read_manifest(fake_run)
    uri = str(tmp_path / "other" / "manifest.parquet")  # the same pool, 40 selected instead of 20
    write_manifest(uri, [table.set_column(table.schema.get_field_index("selected"), "selected",
                                          pa.array(table["rank"].to_numpy() < 40))], read_sidecar(fake_run))
    monkeypatch.setattr(figures, "tsne_2d", _refuse("t-SNE"))
    other = build_report(uri, per_set=12, examples=0)
    assert _pngs(other)["embedding_map"] != _pngs(first)["embedding_map"]  # other points edged as selected
    assert other.metrics["selection"]["k"] == 40


def test_without_keeping_every_figure_is_drawn(fake_run: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    build_report(fake_run, out_uri=str(tmp_path / "first"), per_set=12, examples=0)  # kept
    drawn = []
    tsne = figures.tsne_2d
    monkeypatch.setattr(figures, "tsne_2d", lambda *a, **k: drawn.append("t-SNE") or tsne(*a, **k))
    build_report(fake_run, out_uri=str(tmp_path / "again"), per_set=12, examples=0, keep_figures=False)
    assert drawn == ["t-SNE"]
