"""Report figures. Each function draws one matplotlib figure (Agg backend, no display) and returns PNG bytes."""

from __future__ import annotations

import io
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def mmd_heatmap(df: pd.DataFrame) -> bytes:
    """The squared-MMD matrix as an annotated heatmap."""
    n = len(df)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * n, 0.8 + 0.8 * n))
    im = ax.imshow(df.to_numpy(), cmap="viridis")
    ax.set_xticks(range(n), df.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), df.index)
    high = float(np.nanmax(df.to_numpy())) if n else 0.0
    for i in range(n):
        for j in range(n):
            v = float(df.iat[i, j])
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="black" if v > high / 2 else "white")
    fig.colorbar(im, ax=ax, label="MMD²")
    ax.set_title("Squared MMD (RBF, common bandwidth)")
    return _png(fig)


def tsne_2d(points: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A seeded 2-D t-SNE of ``points`` (PCA to 50 dims first; perplexity adapted to the number of points)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(points, np.float32)
    n = len(x)
    if n < 5:  # t-SNE needs perplexity < n; a handful of points is shown by PCA instead
        xy = PCA(n_components=min(2, n, x.shape[1])).fit_transform(x) if n > 1 else np.zeros((n, 0))
        return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def source_colours(names: list[str]) -> dict[str, tuple]:
    """One colour per set name, the same in every figure of a report (tab10, then tab20b past ten names)."""
    palette = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20b").colors]
    return {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(names))}


def embedding_map(xy: np.ndarray, labels: list[str], selected: np.ndarray, *, colours: dict[str, tuple]) -> bytes:
    """The 2-D map (``tsne_2d``'s coordinates ``xy``) coloured by source; selected pool samples get a black edge."""
    labels_arr = np.asarray(labels)
    selected = np.asarray(selected, bool)
    fig, ax = plt.subplots(figsize=(7, 6))
    for name in dict.fromkeys(labels):
        m, colour = labels_arr == name, colours[name]
        ax.scatter(xy[m & ~selected, 0], xy[m & ~selected, 1], s=10, color=colour, alpha=0.6, label=name)
        ax.scatter(xy[m & selected, 0], xy[m & selected, 1], s=18, color=colour, edgecolors="black", linewidths=0.8)
    ax.scatter([], [], s=18, facecolors="none", edgecolors="black", label="selected (black edge)")
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    ax.set_title("Embedding map (t-SNE)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def score_distributions(
    edges: np.ndarray, counts: dict[str, np.ndarray], threshold: float | None, *, colours: dict[str, tuple]
) -> bytes:
    """Per-source score histograms (density) over ``edges`` from their ``counts``, with the lowest selected score
    (``threshold``) as a dashed line."""
    fig, ax = plt.subplots(figsize=(8, 4))
    widths = np.diff(edges)
    for name, c in counts.items():
        total = max(int(c.sum()), 1)
        ax.stairs(c / (total * widths), edges, linewidth=1.5, color=colours[name], label=name)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
    ax.set_xlabel("score (higher = closer to robot data)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("Score distribution per source")
    return _png(fig)


def selected_mixture(share: pd.DataFrame) -> bytes:
    """Share of the pool vs share of the selected set, per source."""
    x = np.arange(len(share))
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(share), 4))
    ax.bar(x - 0.2, share["pool_share"], width=0.4, label="share of pool", color="#9ab")
    ax.bar(x + 0.2, share["share_of_selection"], width=0.4, label="share of the selection", color="#c53")
    ax.set_xticks(x, share.index, rotation=30, ha="right")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title("Mixture of the selected set")
    return _png(fig)


def thumbnails(samples: list[tuple[bytes, str, float, str]], title: str, *, cols: int = 4) -> bytes:
    """A grid of (image bytes, text, score, source) with wrapped texts; undecodable images show blank."""
    rows = max(1, -(-len(samples) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, text, score, source) in zip(axes.ravel(), samples, strict=False):
        try:
            ax.imshow(np.asarray(Image.open(io.BytesIO(image)).convert("RGB")))
        except Exception:  # noqa: BLE001 - a broken image must not break the report
            ax.text(0.5, 0.5, "(undecodable)", ha="center", va="center")
        caption = textwrap.fill(text[:140], width=36, max_lines=4, placeholder=" …")
        ax.set_title(f"{source} · {score:.3f}\n{caption}", fontsize=7, loc="left")
    fig.suptitle(title)
    return _png(fig)
