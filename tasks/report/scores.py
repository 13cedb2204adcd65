"""Score summaries of a manifest fed batch by batch, in memory that does not grow with the pool: per-source counts,
quantiles, means and the figure's histograms.

Each source and the selected set hold a histogram of ``FINE_BINS`` equal bins over the manifest's score range with
each bin's sum of scores (``(all)`` is the sources' sum). A quantile is ``np.quantile``'s (linear between the two
order statistics around it), with each score taken as the mean of its bin: exact for a bin that holds one score
(or one repeated score), and within one bin — 1/64,000 of the score range — otherwise. The figure's 40 bins are
sums of 1,600 fine bins each; the threshold (the lowest selected score) and the means are exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
FIGURE_BINS = 40
FINE_BINS = FIGURE_BINS * 1600
_SELECTED = 0


class ScoreSummary:
    """Scores of a manifest whose scores lie in [``low``, ``high``]; ``add`` batches, then read the tables."""

    def __init__(self, low: float, high: float) -> None:
        if not high > low:  # one distinct score: a unit-wide range around it, as np.histogram makes one
            low, high = low - 0.5, high + 0.5
        self.low, self.high = float(low), float(high)
        self.sources: list[str] = []
        self.counts = np.zeros((1, FINE_BINS), np.int64)  # rows: (selected), then each source in ``sources`` order
        self.sums = np.zeros((1, FINE_BINS))
        self.selected = np.zeros(0, np.int64)  # selected rows per source
        self.selected_min = np.inf

    def code(self, source: str) -> int:
        """The source's index in ``sources`` (a new source gets the next one)."""
        if source not in self.sources:
            self.sources.append(source)
            self.counts = np.pad(self.counts, ((0, 1), (0, 0)))
            self.sums = np.pad(self.sums, ((0, 1), (0, 0)))
            self.selected = np.pad(self.selected, (0, 1))
        return self.sources.index(source)

    def add(self, codes: np.ndarray, scores: np.ndarray, selected: np.ndarray) -> None:
        """One batch: each row's source code (``code``), score and selected flag."""
        scale = FINE_BINS / (self.high - self.low)
        bins = np.minimum(((scores - self.low) * scale).astype(np.int64), FINE_BINS - 1)  # scores >= low: bins >= 0
        size = self.counts.size
        for flat, values in (((1 + codes) * FINE_BINS + bins, scores), (bins[selected], scores[selected])):
            self.counts += np.bincount(flat, minlength=size).reshape(self.counts.shape)
            self.sums += np.bincount(flat, weights=values, minlength=size).reshape(self.sums.shape)
        self.selected += np.bincount(codes[selected], minlength=len(self.selected))
        if selected.any():
            self.selected_min = min(self.selected_min, float(scores[selected].min()))

    @classmethod
    def of(cls, manifest: pd.DataFrame) -> ScoreSummary:
        """The summary of a manifest DataFrame (``source``, ``score``, ``selected``) held whole."""
        scores = manifest["score"].to_numpy(np.float64)
        summary = cls(scores.min() if len(scores) else 0.0, scores.max() if len(scores) else 0.0)
        codes = np.array([summary.code(str(s)) for s in manifest["source"]], np.int64)
        summary.add(codes, scores, manifest["selected"].to_numpy(bool))  # float64: the bins see the values exactly
        return summary

    def _histogram(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(counts, sums) per fine bin of a source, ``(all)`` or ``(selected)``."""
        if name == "(all)":
            return self.counts[1:].sum(axis=0), self.sums[1:].sum(axis=0)
        row = _SELECTED if name == "(selected)" else 1 + self.sources.index(name)
        return self.counts[row], self.sums[row]

    def quantiles(self) -> pd.DataFrame:
        """Score quantiles (q05 .. q95) and mean per source, plus an ``(all)`` row and a ``(selected)`` row."""
        table = {}
        for name in [*sorted(self.sources), "(all)", "(selected)"]:
            counts, sums = self._histogram(name)
            filled = counts > 0
            means, cum = sums[filled] / counts[filled], np.cumsum(counts[filled])  # each score: its bin's mean
            n = int(cum[-1]) if len(cum) else 0
            out = {}
            for q in QUANTILES:
                if not n:
                    out[f"q{round(q * 100):02d}"] = np.nan
                    continue
                h = (n - 1) * q
                i = int(np.floor(h))
                low, high = (means[np.searchsorted(cum, j, side="right")] for j in (i, min(i + 1, n - 1)))
                out[f"q{round(q * 100):02d}"] = float(low + (h - i) * (high - low))
            out["mean"] = float(sums.sum() / n) if n else np.nan
            table[name] = out
        return pd.DataFrame.from_dict(table, orient="index")

    def by_source(self) -> pd.DataFrame:
        """Per source: pool count, selected count, its share of the pool (``pool_share``), of the selected set
        (``share_of_selection``) and the share of its samples selected (``share_selected``)."""
        names = sorted(self.sources)
        pool = np.array([self.counts[1 + self.sources.index(s)].sum() for s in names], np.int64)
        chosen = np.array([self.selected[self.sources.index(s)] for s in names], np.int64)
        out = pd.DataFrame({"pool": pool, "selected": chosen}, index=pd.Index(names, name="source"))
        out["pool_share"] = out["pool"] / max(int(pool.sum()), 1)
        out["share_of_selection"] = out["selected"] / max(int(chosen.sum()), 1)
        out["share_selected"] = out["selected"] / out["pool"].clip(lower=1)
        return out

    @property
    def threshold(self) -> float | None:
        """The lowest selected score: the K-th selected sample's, which every selected sample reaches."""
        return float(self.selected_min) if np.isfinite(self.selected_min) else None

    def figure(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Edges of ``FIGURE_BINS`` equal bins over the score range, and each source's counts in them."""
        edges = np.linspace(self.low, self.high, FIGURE_BINS + 1)
        return edges, {s: self._histogram(s)[0].reshape(FIGURE_BINS, -1).sum(axis=1) for s in sorted(self.sources)}
