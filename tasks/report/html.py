"""One self-contained HTML page: inline CSS, images as base64 data URIs, no external requests."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td.k, th.k { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; }
p.note { color: #555; font-size: .85em; }
"""


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(df: pd.DataFrame, *, digits: int = 4) -> str:
    """A DataFrame as an HTML table (floats rounded)."""
    return df.to_html(float_format=lambda v: f"{v:.{digits}g}", border=0, na_rep="–", escape=True)


def key_values(items: Mapping[str, Any]) -> str:
    """A two-column table of parameters; a nested mapping gives a row per entry (``trained.val_accuracy``), so
    the page never shows a JSON blob."""
    rows = "".join(
        f'<tr><th class="k">{html.escape(k)}</th><td class="k">{html.escape(_text(v))}</td></tr>'
        for k, v in _flat(items)
    )
    return f"<table>{rows}</table>"


def _flat(items: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in items.items():
        if isinstance(value, Mapping) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _text(value: Any) -> str:
    """Numbers rounded for reading, lists as comma-separated items, nothing as a dash."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return "–" if value is None or value == {} else str(value)


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def render_html(title: str, sections: list[tuple[str, str]]) -> str:
    """The page: ``title`` then each (heading, HTML body) section. Bodies are trusted HTML built by the helpers
    above (which escape their inputs)."""
    body = "\n".join(f"<section><h2>{html.escape(h)}</h2>\n{content}\n</section>" for h, content in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
