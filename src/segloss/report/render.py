"""Render a report, given as a list of blocks, to Markdown and to a self-contained HTML page.

The same blocks give both documents, so they never disagree. Figures are PNG bytes: the
Markdown links ``figures/<name>.png``, the HTML embeds them as base64 (opens offline).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Image:
    name: str  # file name under figures/, e.g. "learning_curves.png"
    caption: str
    png: bytes


Block = Heading | Text | Table | Image

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
"""


def _table_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers to short strings, missing values to a dash, so both outputs read alike."""
    return frame.apply(
        lambda col: col.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
    ).fillna("–")


def to_markdown(title: str, blocks: list[Block]) -> str:
    """The report as Markdown, figures linked from ``figures/``."""
    parts = [f"# {title}"]
    for block in blocks:
        match block:
            case Heading(text, level):
                parts.append(f"{'#' * level} {text}")
            case Text(text):
                parts.append(text)
            case Table(frame):
                parts.append(_table_frame(frame).to_markdown(index=False))
            case Image(name, caption, _):
                parts.append(f"![{caption}](figures/{name})\n\n*{caption}*")
    return "\n\n".join(parts) + "\n"


def to_html(title: str, blocks: list[Block]) -> str:
    """The report as one HTML page with every figure embedded (no external files)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        match block:
            case Heading(text, level):
                parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
            case Text(text):
                parts.append(f"<p>{html.escape(text)}</p>")
            case Table(frame):
                parts.append(_table_frame(frame).to_html(index=False, border=0, escape=True))
            case Image(name, caption, png):
                data = base64.b64encode(png).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(name)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
