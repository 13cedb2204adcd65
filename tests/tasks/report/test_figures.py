"""Every figure of a report draws a source in the same colour."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb

from tasks.report import figures
from tasks.report.scores import ScoreSummary


def test_a_source_has_one_colour_in_every_figure(monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    rng = np.random.default_rng(0)
    manifest = pd.DataFrame(
        {"source": ["docs"] * 20 + ["tabletop"] * 20, "score": rng.random(40), "selected": [True, False] * 20}
    )
    colours = figures.source_colours(["tabletop", "docs", "robot", "selected", "pool"])
    assert len(set(colours.values())) == 5
    edges, counts = ScoreSummary.of(manifest).figure()
    figures.score_distributions(edges, counts, 0.5, colours=colours)
    labels = ["robot"] * 10 + ["docs"] * 20 + ["tabletop"] * 20
    figures.embedding_map(rng.random((50, 2)), labels, np.zeros(50, bool), colours=colours)
    hist_ax, map_ax = drawn[0].axes[0], drawn[1].axes[0]
    hist = {p.get_label(): to_rgb(p.get_edgecolor()) for p in hist_ax.patches if p.get_label() in colours}
    points = {c.get_label(): to_rgb(c.get_facecolor()[0]) for c in map_ax.collections if c.get_label() in colours}
    assert hist == {name: to_rgb(colours[name]) for name in ("docs", "tabletop")}
    assert points == {name: to_rgb(colours[name]) for name in ("robot", "docs", "tabletop")}
