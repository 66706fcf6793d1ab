"""One result type for every fit: parameters, bootstrap intervals, predictions, diagnostics.

``to_json`` puts the law's parameters at the top level under their published names (``E``, ``A``,
``alpha``...; ``G``, ``a``...; ``N_c``, ``alpha_N``...), beside ``intervals`` / ``se`` for each,
``predictions`` at the target compute, ``diagnostics`` (points used and dropped and why,
residuals, hold-out check) and the ``convention`` that defines N, D and C. ``report`` is the same
content for people, ``_repr_html_`` a table for Jupyter. :meth:`FitResult.load` reads the JSON back
(plain JSON: no code runs), and the loaded result evaluates its law (``predict``, ``loss_at``,
``optimum``) exactly as the fit did; only the bootstrap draws and plot data stay behind.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lab.fit.engine.bootstrap import summarize


def residual_stats(logL: np.ndarray, logpred: np.ndarray) -> dict[str, Any]:
    """Residuals in log loss (= relative error for small values)."""
    r = np.asarray(logpred, float) - np.asarray(logL, float)
    if r.size == 0:
        return {"n": 0}
    return {"n": int(r.size), "rms_log": float(np.sqrt(np.mean(r ** 2))), "max_abs_log": float(np.max(np.abs(r))),
            "mean_abs_pct": float(np.mean(np.abs(np.expm1(r))) * 100), "values_log": [float(x) for x in r]}


@dataclass
class FitResult:
    law: str
    formula: str
    params: dict[str, float]
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)   # bootstrap draws
    level: float = 0.95
    predictions: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    convention: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)            # for plots
    saved: dict[str, Any] = field(default_factory=dict, repr=False)            # intervals/se of a loaded result

    @property
    def intervals(self) -> dict[str, list[float]]:
        """Each sampled quantity's bootstrap interval: from the draws, or as saved for a loaded result."""
        return self._summary()[0]

    @property
    def se(self) -> dict[str, float]:
        """Each sampled quantity's standard error (SD over the draws, or as saved)."""
        return self._summary()[1]

    def _summary(self) -> tuple[dict[str, list[float]], dict[str, float]]:
        if self.samples:
            return summarize(self.samples, self.level)
        return dict(self.saved.get("intervals", {})), dict(self.saved.get("se", {}))

    # -- evaluating the law -------------------------------------------------------------------

    def predict(self, N=None, D=None, C=None):
        """Loss (nats/token) at N non-embedding params and D tokens, for L(N, D) laws and Kaplan's
        L(N) / L(D); for the hyperparameter laws, ``(B_opt tokens, lr_opt)`` at (N, D) (form ND) or
        at ``C=`` training FLOPs (form C). A loss law refuses ``C=``: its loss at C is ``loss_at(C)``."""
        if self.law.startswith("hyperparameter"):
            return self._hparams(N=N, D=D, C=C)
        from lab.fit.engine.errors import FitError
        from lab.fit.engine.evaluate import loss_nd

        if C is not None:
            raise FitError(f"{self.law}: predict takes N and D, not C; the compute-optimal loss at C "
                           "training FLOPs is loss_at(C), the allocation optimum(C)")

        return loss_nd(self.law, self.params, N, D)

    def loss_at(self, C):
        """The compute-optimal loss L*(C) at C training FLOPs (the fit's own C convention)."""
        from lab.fit.engine.evaluate import frontier

        return frontier(self.law, self.params, C, self.diagnostics.get("flop_model"))

    def optimum(self, C):
        """(N_opt, D_opt, L*) at C: the compute-optimal allocation the law implies."""
        from lab.fit.engine.evaluate import allocation

        return allocation(self.law, self.params, C, self.diagnostics.get("flop_model"))

    def _hparams(self, N=None, D=None, C=None):
        from lab.fit.hparams import predict_hparams

        form = "C" if "B_C_exp" in self.params else "ND"
        return predict_hparams(self.params, form, C=C, N=N, D=D)

    def health(self):
        """This fit's :class:`~lab.fit.health.Verdict`: the one the fit attached when it was made
        (``diagnostics["health"]``, judged with its bootstrap draws under the default criteria, so a
        loaded result gives the same answer), else judged now."""
        from dataclasses import fields

        from lab.fit.health import Verdict, fit_health, hparams_health

        saved = (self.diagnostics or {}).get("health")
        if isinstance(saved, dict) and "verdict" in saved:
            keep = {f.name for f in fields(Verdict)}
            return Verdict(**{k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                              for k, v in saved.items() if k in keep})
        return (hparams_health if self.law.startswith("hyperparameter") else fit_health)(self)

    # -- persistence ----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "FitResult":
        """A result from :meth:`to_json`'s dict (intervals kept; bootstrap draws are not saved)."""
        if not isinstance(doc, dict) or "law" not in doc or "formula" not in doc:
            raise ValueError("not a fit result: a JSON object with 'law' and 'formula' expected")
        saved_iv = doc.get("intervals") if isinstance(doc.get("intervals"), dict) else {}
        # a parameter saved as null is one that was NaN (to_json writes NaN as null: e.g. C_c when the
        # loss line's slope is 0); it comes back NaN rather than vanishing
        params = {k: (math.nan if v is None else float(v)) for k, v in doc.items()
                  if (isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _NOT_PARAMS)
                  or (v is None and (k in saved_iv or k not in _NOT_PARAMS))}
        return cls(doc["law"], doc["formula"], params, level=float(doc.get("level", 0.95)),
                   predictions=dict(doc.get("predictions") or {}), diagnostics=dict(doc.get("diagnostics") or {}),
                   convention=dict(doc.get("convention") or {}), notes=list(doc.get("notes") or []),
                   saved={"intervals": dict(doc.get("intervals") or {}), "se": dict(doc.get("se") or {})})

    @classmethod
    def load(cls, path, name: str | None = None) -> "FitResult":
        """Read a fit's JSON file: one fit (``FitResult.dumps``, the demo's ``fits/*.json``), or
        ``name`` out of a file of several (``python -m lab.fit chinchilla --approach all --json``)."""
        from pathlib import Path

        doc = json.loads(Path(path).read_text())
        if name is None and isinstance(doc, dict) and "law" in doc and "formula" in doc:
            return cls.from_json(doc)
        fits = {k: v for k, v in doc.items() if isinstance(v, dict) and "formula" in v} if isinstance(doc, dict) else {}
        if name not in fits:
            raise ValueError(f"{path}: {'no fit ' + repr(name) if name else 'several fits'} in it; "
                             f"pass name= one of {sorted(fits) or 'none'}")
        return cls.from_json(fits[name])

    def _repr_html_(self) -> str:
        from lab.fit.engine.html import result_table

        return result_table(self)

    def to_json(self) -> dict[str, Any]:
        iv, se = self._summary()
        out: dict[str, Any] = {"law": self.law, "formula": self.formula}
        out.update({k: to_jsonable(v) for k, v in self.params.items()})
        out["intervals"] = {k: to_jsonable(v) for k, v in iv.items()}
        out["se"] = {k: to_jsonable(v) for k, v in se.items()}
        out["level"] = self.level
        out["predictions"] = to_jsonable(self.predictions)
        out["diagnostics"] = to_jsonable(self.diagnostics)
        out["convention"] = dict(self.convention)
        out["notes"] = list(self.notes)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, allow_nan=False)

    def report(self) -> str:
        iv, se = self._summary()
        lines = [f"== {self.law}:  {self.formula}"]
        for k, v in self.params.items():
            ci = iv.get(k)
            ci_s = f"  [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
            lines.append(f"  {k:>10} = {_fmt(v)}{ci_s}")
        if iv:
            lines.append(f"  ({self.level:.0%} bootstrap intervals, {self.diagnostics.get('bootstrap', 0)} resamples"
                         + (f", {self.diagnostics['bootstrap_failed']} failed" if self.diagnostics.get("bootstrap_failed") else "")
                         + ("" if self.samples else "; as saved") + ")")
        p = self.predictions
        if p:
            lines.append(f"  at C = {_fmt(p.get('C'))}:" + "".join(
                f"  {k} = {_fmt(p[k])}" + (f" [{_fmt(p[k + '_interval'][0])}, {_fmt(p[k + '_interval'][1])}]"
                                          if k + "_interval" in p else "")
                for k in ("N_opt", "D_opt", "loss", "B_opt", "lr_opt") if k in p))
            if p.get("note"):
                lines.append(f"    ({p['note']})")
        d = self.diagnostics
        used = d.get("n_points")
        lines.append(f"  points: {used} used, {len(d.get('dropped', []))} dropped"
                     + (f"; groups: {d['n_groups']}" if "n_groups" in d else ""))
        for dr in d.get("dropped", [])[:10]:
            lines.append(f"    dropped {dr['id']}: {dr['reason']}")
        res = d.get("residuals", {})
        if res.get("n"):
            lines.append(f"  residuals (log loss): rms {res['rms_log']:.4f}, max {res['max_abs_log']:.4f} "
                         f"(mean |error| {res['mean_abs_pct']:.2f}%)")
        ho = d.get("holdout")
        if ho:
            if ho.get("skipped"):
                lines.append(f"  leave-largest-out: skipped ({ho['skipped']})")
            else:
                lines.append(f"  leave-largest-out: {ho['what']}: mean |error| {ho['mean_abs_pct']:.2f}%, "
                             f"max {ho['max_abs_pct']:.2f}% over {ho['n']} held-out point(s)")
        for k, v in self.convention.items():
            lines.append(f"  [{k}] {v}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)


_RESERVED = {"law", "formula", "intervals", "se", "level", "predictions", "diagnostics", "convention", "notes"}
# top-level keys that documents embedding a fit put beside its parameters (lab.fit's --json, the
# study's a_hparams_law.json): never parameters, even when null
_NOT_PARAMS = _RESERVED | {"error", "errors", "joint", "agreement", "health", "name", "id", "path",
                           "fitted_params", "resolved", "resolved_intervals", "resolved_health"}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.4e}"


def to_jsonable(v: Any) -> Any:
    """JSON-safe: numpy -> python, NaN/inf -> None."""
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [to_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v
