"""The ablation's figure and its self-contained HTML page (the figure inlined as a base64 PNG), so the result can
be read beside the runs without MLflow or Prefect at hand."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display: the figure is only ever written to bytes
import matplotlib.pyplot as plt  # noqa: E402

from core.settings import StorageConfig  # noqa: E402
from core.storage import read_bytes  # noqa: E402
from training.ablation import ARMS, CURVE_METRICS, UnitResult  # noqa: E402
from training.ablation_stats import (  # noqa: E402
    ArmSummary,
    difference_rows,
    differences,
    summarise,
    table,
    verdict,
)
from training.closed_loop import wilson_interval  # noqa: E402

COLOURS = {"none": "#7f7f7f", "random": "#1f77b4", "sources": "#2ca02c", "curated": "#d62728"}


def curves_png(summaries: Sequence[ArmSummary], *, title: str = "held-out action loss") -> bytes:
    """One line per arm (mean over seeds), shaded ± one standard deviation, over fine-tuning steps."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for s in summaries:
        colour = COLOURS.get(s.arm)
        ax.plot(s.steps, s.mean, marker="o", ms=3, color=colour, label=f"{s.arm} ({len(s.seeds)} seeds)")
        ax.fill_between(s.steps, s.mean - s.std, s.mean + s.std, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(*, title: str, verdict: str, arms: Sequence[Mapping[str, object]],
                pairs: Sequence[Mapping[str, object]], budget: Mapping[str, object], png: bytes,
                rollouts: Mapping[str, bytes] | None = None) -> str:
    """The page: verdict first, the figure, the per-arm table, the pairwise differences, each arm's closed-loop
    rollouts (a GIF per arm, when rolled out) and the budget."""
    image = base64.b64encode(png).decode()
    gifs = "".join(f'<figure><img alt="{html.escape(arm)} rollouts" src="data:image/gif;base64,'
                   f'{base64.b64encode(gif).decode()}"><figcaption>{html.escape(arm)}</figcaption></figure>'
                   for arm, gif in (rollouts or {}).items())
    shown = (f"<h2>Closed-loop rollouts (each arm's first seed; framed green on success, red on failure)</h2>{gifs}"
             if gifs else "")
    budget_rows = [{"setting": k, "value": v} for k, v in budget.items()]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.verdict{{font-size:1.1em;background:#f5f5f5;
padding:1em}}</style></head><body><h1>{html.escape(title)}</h1>
<p class="verdict">{html.escape(verdict)}</p>
<img alt="held-out loss per arm" src="data:image/png;base64,{image}">
<h2>Arms (mean over seeds; area = mean held-out loss over fine-tuning)</h2>{_html_table(arms)}
<h2>Pairwise differences (paired by seed, Student-t interval; negative = first arm lower loss)</h2>
{_html_table(pairs)}
{shown}
<h2>Budget (the same for every arm)</h2>{_html_table(budget_rows)}
</body></html>"""


@dataclass(frozen=True)
class Analysis:
    """What the ablation publishes: per-arm rows, pairwise differences, the verdict, the figure and the page."""

    arms: list[dict[str, object]]
    pairs: list[dict[str, object]]
    verdict: str
    png: bytes
    html: str


def closed_loop_comparison(units: Sequence[UnitResult], order: Sequence[str], arms: list[dict[str, object]], *,
                           level: float) -> tuple[str, list[dict[str, object]]]:
    """Add each arm's closed-loop success rate (episodes pooled over seeds, Wilson interval) to its row of
    ``arms``; return the verdict on the failure rate (paired by seed, t-interval: lower is better, as for the
    loss) and its difference rows."""
    for row in arms:
        mine = [u.closed_loop for u in units if u.arm == row["arm"]]
        k, n = int(sum(c["successes"] for c in mine)), int(sum(c["episodes"] for c in mine))
        low, high = wilson_interval(k, n, level=level)
        row |= {"success_rate": round(k / n, 4), "success_low": round(low, 4), "success_high": round(high, 4)}
    failure = [summarise(a, {u.seed: [(0, 1.0 - u.closed_loop["rate"])] for u in units if u.arm == a})
               for a in order]
    diffs = [replace(d, statistic="failure rate") for d in differences(failure, statistic="final", level=level)]
    return verdict(diffs, metric="closed-loop"), difference_rows(diffs)


def rollout_gifs(units: Sequence[UnitResult], storage: StorageConfig | None = None) -> dict[str, bytes]:
    """Each rolled-out arm's GIF from its lowest seed, for the page."""
    first = {}
    for unit in sorted(units, key=lambda u: u.seed):
        if unit.rollouts_uri and unit.arm not in first:
            first[unit.arm] = read_bytes(unit.rollouts_uri, storage)
    return first


def analyse(units: Sequence[UnitResult], *, budget: Mapping[str, object], title: str, level: float = 0.95,
            rollouts: Mapping[str, bytes] | None = None) -> Analysis:
    """Summarise the held-out loss per arm (in ``ARMS`` order), compare every pair on the area under the curve
    and on the final value, and say whether the curated arm won; with closed-loop rollouts in every unit, the
    same for the success rate."""
    order = [a for a in ARMS if any(u.arm == a for u in units)]
    summaries = [summarise(a, {u.seed: u.curves["loss"] for u in units if u.arm == a}) for a in order]
    extra = {name.replace("/", "_"): {a: np.array([u.curves[name][-1][1] for u in units if u.arm == a])
                                      for a in order if all(name in u.curves for u in units if u.arm == a)}
             for name in CURVE_METRICS if name != "loss"}
    auc = differences(summaries, statistic="auc", level=level)
    final = differences(summaries, statistic="final", level=level)
    text = verdict(auc, metric="held-out loss")
    arms = table(summaries, extra)
    pairs = difference_rows(auc + final)
    if units and all(u.closed_loop for u in units):
        closed_text, closed_rows = closed_loop_comparison(units, order, arms, level=level)
        text, pairs = f"{text} Closed loop: {closed_text}", pairs + closed_rows
    png = curves_png(summaries)
    return Analysis(arms=arms, pairs=pairs, verdict=text, png=png,
                    html=report_html(title=title, verdict=text, arms=arms, pairs=pairs, budget=budget, png=png,
                                      rollouts=rollouts))
