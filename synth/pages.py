"""Flat, synthetic "pages": charts and documents, the pool content farthest from any robot camera.

Text on the page is drawn as dark blocks rather than glyphs: at 64 px glyphs would be unreadable anyway, and
blocks keep rendering fast and independent of the fonts installed on a machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from synth.tabletop import COLORS, apply_light

Scene = tuple[Image.Image, str]
_PALETTE = list(COLORS.values())
_TITLE_ADJ = ("Annual", "Quarterly", "Monthly", "Internal", "Final", "Draft", "Technical", "Regional")
_TITLE_NOUN = ("Safety", "Sales", "Research", "Budget", "Project", "Maintenance", "Audit", "Training")
_TITLE_KIND = ("Report", "Summary", "Memo", "Review", "Plan", "Notice", "Proposal", "Invoice")


def _blocks(
    d: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    x0: float,
    x1: float,
    y: float,
    h: float,
    color: tuple[int, int, int],
) -> None:
    """One line of 'words': dark blocks of random width with gaps, from x0 up to at most x1."""
    x, unit = x0, max(1.0, h)
    while True:
        w = unit * rng.integers(2, 7)
        if x + w > x1:
            return
        d.rectangle([x, y, x + w, y + h], fill=color)
        x += w + unit * 1.2


def draw_document(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """A page: a title (bar or heading), sections of text lines, maybe a table or a figure box."""
    s = size
    paper = tuple(int(c) for c in (255, 255, 255) - rng.integers(0, 18, 3))
    img = Image.new("RGB", (s, s), paper)
    d = ImageDraw.Draw(img)
    ink = tuple(int(c) for c in rng.integers(10, 70, 3))
    title = " ".join(str(rng.choice(words)) for words in (_TITLE_ADJ, _TITLE_NOUN, _TITLE_KIND))
    margin, line_h = s * rng.uniform(0.06, 0.12), max(1.0, s / 48)
    if rng.random() < 0.5:  # a coloured title bar with light title text
        d.rectangle([0, 0, s, s * 0.13], fill=_PALETTE[int(rng.integers(len(_PALETTE)))])
        _blocks(d, rng, margin, s * 0.7, s * 0.045, line_h * 1.6, (250, 250, 250))
    else:
        _blocks(d, rng, margin, s * 0.75, s * 0.05, line_h * 1.8, ink)
    y, sections = s * 0.19, 0
    has_table = has_figure = False
    while y < s - margin:
        sections += 1
        _blocks(d, rng, margin, s * 0.5, y, line_h * 1.3, ink)  # section heading
        y += line_h * 3.5
        extra = rng.random()
        if extra < 0.15 and not has_table and y + s * 0.2 < s - margin:  # a ruled table
            has_table = True
            for k in range(5):
                d.line([(margin, y + k * s * 0.05), (s - margin, y + k * s * 0.05)], fill=ink)
            for k in range(4):
                x = margin + k * (s - 2 * margin) / 3
                d.line([(x, y), (x, y + s * 0.2)], fill=ink)
            y += s * 0.25
        elif extra < 0.3 and not has_figure and y + s * 0.22 < s - margin:  # a figure box
            has_figure = True
            d.rectangle([margin, y, s * 0.6, y + s * 0.2], fill=(200, 200, 205), outline=ink)
            y += s * 0.25
        for _ in range(int(rng.integers(2, 6))):
            if y > s - margin:
                break
            _blocks(d, rng, margin, s - margin, y, line_h, (90, 90, 95))
            y += line_h * 2.6
        y += line_h * 2
    image = apply_light(img, tuple(rng.uniform(0.95, 1.02, 3)), float(rng.uniform(0.5, 3)), rng)
    if not qa:
        return image, f"a scanned page of a document titled {title}"
    question = int(rng.integers(3))
    if question == 0:
        return image, f"Q: What is the title of the document? A: {title}."
    if question == 1:
        return image, f"Q: How many sections does the document have? A: {sections}."
    return image, f"Q: Does the document contain a table? A: {'yes' if has_table else 'no'}."


def draw_chart(rng: np.random.Generator, size: int, *, qa: bool) -> Scene:
    """A bar, line or pie chart with axes and label blocks; the question is answered from the drawn values."""
    s = size
    img = Image.new("RGB", (s, s), tuple(int(c) for c in 255 - rng.integers(0, 12, 3)))
    d = ImageDraw.Draw(img)
    kind = str(rng.choice(["bar", "line", "pie"], p=[0.5, 0.35, 0.15]))
    n = int(rng.integers(3, 7))
    values = rng.uniform(0.15, 1.0, n)
    labels = "ABCDEFG"[:n]
    x0, x1, y0, y1 = s * 0.15, s * 0.93, s * 0.12, s * 0.85  # plot area
    axis = (40, 40, 40)
    _blocks(d, rng, s * 0.2, s * 0.8, s * 0.03, max(1.0, s / 40), axis)  # the chart title
    if kind == "pie":
        cx, cy, r = s * 0.5, s * 0.53, s * 0.33
        start = 0.0
        for i, v in enumerate(values / values.sum()):
            d.pieslice(
                [cx - r, cy - r, cx + r, cy + r], start, start + 360 * v, fill=_PALETTE[i % 6], outline=axis
            )
            start += 360 * v
    else:
        for k in range(1, 5):  # grid lines
            gy = y1 - (y1 - y0) * k / 4
            d.line([(x0, gy), (x1, gy)], fill=(215, 215, 215))
        d.line([(x0, y0), (x0, y1), (x1, y1)], fill=axis, width=max(1, s // 64))
        step = (x1 - x0) / n
        points = [(x0 + step * (i + 0.5), y1 - (y1 - y0) * v) for i, v in enumerate(values)]
        if kind == "bar":
            one_color = rng.random() < 0.5
            for i, (x, y) in enumerate(points):
                color = _PALETTE[0 if one_color else i % 6]
                d.rectangle([x - step * 0.32, y, x + step * 0.32, y1], fill=color)
        else:
            d.line(points, fill=_PALETTE[int(rng.integers(6))], width=max(1, s // 40))
            for x, y in points:
                d.ellipse([x - s / 60, y - s / 60, x + s / 60, y + s / 60], fill=axis)
        for x, _ in points:  # tick label blocks
            d.rectangle([x - s / 50, y1 + s * 0.03, x + s / 50, y1 + s * 0.06], fill=axis)
    image = apply_light(img, (1.0, 1.0, 1.0), float(rng.uniform(0.5, 2)), rng)
    top, low = labels[int(np.argmax(values))], labels[int(np.argmin(values))]
    if kind == "line":
        years = [str(2015 + i) for i in range(n)]
        if not qa:
            return image, f"a line chart of values from {years[0]} to {years[-1]}"
        if rng.random() < 0.5:
            return image, f"Q: In which year is the value highest? A: {years[int(np.argmax(values))]}."
        return image, f"Q: Does the value go up or down from {years[0]} to {years[-1]}? A: " + (
            "up." if values[-1] > values[0] else "down."
        )
    noun = "bar" if kind == "bar" else "slice"
    if not qa:
        return image, f"a {kind} chart with {n} {noun}s"
    question = int(rng.integers(3))
    if question == 0:
        return image, f"Q: Which {noun} is the {'tallest' if kind == 'bar' else 'largest'}? A: {top}."
    if question == 1:
        return image, f"Q: Which {noun} is the {'shortest' if kind == 'bar' else 'smallest'}? A: {low}."
    return image, f"Q: How many {noun}s are in the chart? A: {n}."
