"""HTML tables of fit results, for Jupyter (``FitResult._repr_html_``) and the HTML report.

Plain HTML with escaped text and a few class names (``lab-fit``, ``verdict-ok|weak|ill-posed``)
that the report's stylesheet colours; no scripts, no external references.
"""

from __future__ import annotations

import html
import math
from typing import Any

PRED_KEYS = ("N_opt", "D_opt", "loss", "B_opt", "lr_opt", "tokens_per_param")


def fmt(v: Any) -> str:
    """A number the way the lab's reports print it: 4 significant digits, thousands separators for ints."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v))
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def width_text(iv: Any, center: Any) -> str:
    """An interval's width beside it: half-width in % of ``center``; the factor hi/lo when a positive
    interval spans more than 2x; the absolute half-width when it contains 0."""
    if not iv or len(iv) < 2 or not (_finite(iv[0]) and _finite(iv[1]) and _finite(center)) or center == 0:
        return ""
    lo, hi = float(iv[0]), float(iv[1])
    if lo > 0 and hi / lo > 2:
        return f" (x{hi / lo:.3g})"
    if lo <= 0 <= hi:  # around 0 a relative width means nothing: the absolute half-width
        return f" (±{(hi - lo) / 2:.2g})"
    return f" (±{100 * (hi - lo) / 2 / abs(center):.2g}%)"


def interval_cell(iv: Any, center: Any = None) -> str:
    """``[lo, hi]``, and its width when the point estimate ``center`` is given."""
    if not iv or len(iv) < 2 or iv[0] is None or iv[1] is None:
        return "-"
    return f"[{fmt(iv[0])}, {fmt(iv[1])}]" + width_text(iv, center)


def verdict_html(verdict: Any) -> str:
    """A verdict (a :class:`~lab.fit.health.Verdict` or its JSON) as a coloured label with its reasons."""
    doc = verdict.to_json() if hasattr(verdict, "to_json") else dict(verdict or {})
    v = doc.get("verdict") or "unknown"
    items = "".join(f"<li>{html.escape(r)}</li>" for r in doc.get("reasons", []))
    items += "".join(f"<li>fix: {html.escape(f)}</li>" for f in doc.get("fixes", []))
    return (f'<span class="verdict verdict-{html.escape(v)}">{html.escape(v)}</span>'
            + (f"<ul class='reasons'>{items}</ul>" if items else ""))


def result_table(res: Any, verdict: Any | None = None) -> str:
    """One fit: its formula, parameters with intervals, predictions at the target, points, verdict."""
    iv = res.intervals
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td><td>{interval_cell(iv.get(k), v)}</td></tr>"
                   for k, v in res.params.items())
    p = res.predictions or {}
    preds = "".join(f"<tr><td>{k} at C = {fmt(p.get('C'))}</td><td>{fmt(p[k])}</td>"
                    f"<td>{interval_cell(p.get(k + '_interval'), p[k])}</td></tr>" for k in PRED_KEYS if k in p)
    d = res.diagnostics or {}
    pts = f"{d.get('n_points', '?')} points used, {len(d.get('dropped', []))} dropped"
    if verdict is None:
        try:
            verdict = res.health()
        except Exception as e:  # noqa: BLE001 - a table must render even when a check cannot run
            verdict = {"verdict": "unknown", "reasons": [f"health check failed: {e}"]}
    level = f"{res.level:.0%}"
    return (f'<div class="lab-fit"><b>{html.escape(res.law)}</b>: <code>{html.escape(res.formula)}</code>'
            f"<table><tr><th>parameter</th><th>value</th><th>{level} interval (width)</th></tr>{rows}{preds}</table>"
            f"<div>{pts}. Health: {verdict_html(verdict)}</div></div>")
