"""The report's HTML: one self-contained page (figures as base64 PNG, inline CSS, no scripts, no
external references), built from sections of escaped fragments."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lab.fit.engine.html import fmt

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;background:#fafbfc}
main{max-width:1180px;margin:0 auto;padding:16px 28px 60px}
header{background:#1d2430;color:#fff;padding:14px 28px}header h1{margin:0;font-size:21px}
header p{margin:4px 0 0;color:#c8d0dc;font-size:13px}
nav{font-size:13px;margin:10px 0 4px}nav a{margin-right:14px;color:#2457a6;text-decoration:none}
section{background:#fff;border:1px solid #e1e5eb;border-radius:8px;padding:6px 20px 16px;margin:18px 0}
h2{font-size:18px;border-bottom:1px solid #e1e5eb;padding-bottom:6px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}
td,th{border:1px solid #dde2e8;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f1f4f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:10px 0;display:inline-block;max-width:100%}figure img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555;max-width:900px}
.verdict{display:inline-block;padding:0 7px;border-radius:9px;font-weight:600;font-size:12px}
.verdict-ok{background:#d8f0dc;color:#17692a}.verdict-weak{background:#fdf0c9;color:#7a5a00}
.verdict-ill-posed{background:#fbd9d6;color:#9b1c12}.verdict-unknown{background:#e6e6e6}
.missing{background:#fff6e5;border-left:4px solid #e0a100;padding:6px 10px;font-size:13px;margin:8px 0}
.reasons{margin:2px 0 6px 16px;padding:0;font-size:12px}.lab-fit{margin:10px 0}
.key{font-size:15px}.key td{font-size:14px}code{font-size:12px}
.scroll{max-height:420px;overflow:auto;display:inline-block}
"""


@dataclass
class Section:
    """A titled part of the page: HTML blocks, and sentences saying what could not be shown."""

    title: str
    blocks: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(ch if ch.isalnum() else "-" for ch in self.title.lower())

    def add(self, block: str | None) -> None:
        if block:
            self.blocks.append(block)

    def lack(self, what: str) -> None:
        self.missing.append(what)


def esc(text: Any) -> str:
    return html.escape(str(text))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; numbers are formatted, strings escaped, ``Raw`` cells passed through."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


class Raw(str):
    """HTML that a table cell takes as is (already escaped)."""


def _cell(v: Any) -> str:
    if isinstance(v, Raw):
        return f"<td>{v}</td>"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{fmt(v)}</td>'
    return f"<td>{esc('-' if v is None else v)}</td>"


def figure(draw: Callable[[], Any], caption: str, missing: list[str]) -> str | None:
    """The figure ``draw()`` makes, embedded; when it cannot be drawn, why goes into ``missing``."""
    import matplotlib.pyplot as plt

    from lab.plots.base import figure_of, png_base64

    try:
        fig = figure_of(draw())
    except Exception as e:  # noqa: BLE001 - one figure's failure must not take the report down
        plt.close("all")
        missing.append(f"figure not drawn ({caption.split('.')[0]}): {type(e).__name__}: {e}")
        return None
    img = png_base64(fig)
    return f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{img}"><figcaption>{esc(caption)}</figcaption></figure>'


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page."""
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(_section(s) for s in sections)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)} &middot; written {stamp}</p></header>"
            f"<main><nav>{nav}</nav>{body}</main></body></html>")


def _section(s: Section) -> str:
    miss = "".join(f'<div class="missing">{esc(m)}</div>' for m in s.missing)
    return f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{miss}{"".join(s.blocks)}</section>'
