"""Hyperparameter laws: the optimal batch size and peak learning rate as functions of compute.

As DeepSeek LLM (2024) and Step Law (Li et al. 2025) fit them: in each compute budget (form ``C``)
or (N, D) cell (form ``ND``), take the *near-optimal* runs, those whose loss is within ``band``
(0.25% by default) of the cell's best, and fit log-space least squares through all of them:

* form C:  ``B_opt = B_coef * C^B_C_exp``,  ``lr_opt = lr_coef * C^lr_C_exp``
* form ND: ``lr_opt = lr_coef * N^lr_N_exp * D^lr_D_exp``,  ``B_opt = B_coef * D^B_D_exp``

Batch is in tokens (``--batch-unit sequences --seq-len L`` converts). Intervals: bootstrap over runs
resampled within cells, the band reselected each time. A second estimate fits a smooth quadratic
surface of loss over (ln B, ln lr) per cell and takes its minimum, so the optimum is not tied to grid
points; both are reported with the gap between them. A cell whose best run sits on the edge of its
swept batch or LR range is flagged (widen the grid there); diverged and failed runs are excluded and
counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lab.fit.health import hparams_health, judged
from lab.fit.engine.bootstrap import bootstrap_weights, interval
from lab.fit.engine.errors import FitError, quiet, require
from lab.fit.engine.points import group_budgets, read_table, require_one_setting
from lab.fit.engine.result import FitResult

BATCH_ALIASES = ["batch_tokens", "bs", "batch", "batch_size"]
LR_ALIASES = ["lr", "learning_rate", "peak_lr"]
LOSS_ALIASES = ["loss_val", "smooth loss", "loss", "val_loss"]


@dataclass
class HparamData:
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    B: np.ndarray      # tokens
    lr: np.ndarray
    loss: np.ndarray
    cell: np.ndarray   # int cell per row
    cells: list[dict[str, float]]
    excluded: list[dict[str, Any]]
    notes: list[str]
    columns: dict[str, str]


def _pick(df: pd.DataFrame, given: str | None, aliases: list[str], what: str) -> str | None:
    if given is not None:
        if given not in df.columns:
            raise FitError(f"--{what} column {given!r} is not in the table")
        return given
    return next((a for a in aliases if a in df.columns), None)


def load_hparams(source, form: str = "C", N: str | None = None, D: str | None = None, C: str | None = None,
                 batch: str | None = None, batch_unit: str = "tokens", seq_len: int | None = None,
                 lr: str | None = None, loss: str | None = None, cooldowns: bool = True) -> HparamData:
    """Validate a batch x LR table and group its runs into cells (budgets or (N, D) pairs).

    ``cooldowns``: keep the lab's WSD cooldown-branch rows; each is the same (B, lr) run finished at
    a smaller D, so it joins the cell of its own C (the budget tags are the main run's and are not used).
    """
    require(form in ("C", "ND"), f"--form {form!r}; allowed: C, ND")
    require(batch_unit in ("tokens", "sequences"), f"--batch-unit {batch_unit!r}; allowed: tokens, sequences")
    df, where = read_table(source)
    cols = {"N": _pick(df, N, ["params", "N", "n"], "N"), "D": _pick(df, D, ["tokens", "D", "t"], "D"),
            "C": _pick(df, C, ["flops", "C"], "C"), "batch": _pick(df, batch, BATCH_ALIASES, "batch"),
            "lr": _pick(df, lr, LR_ALIASES, "lr"), "loss": _pick(df, loss, LOSS_ALIASES, "loss")}
    for k in ("batch", "lr", "loss"):
        require(cols[k] is not None, f"no {k} column: pass --{k} COL")
    require(cols["N"] is not None and (cols["D"] is not None or cols["C"] is not None),
            "need N and D (or N and C) columns: pass --N/--D/--C")
    notes: list[str] = []
    excluded: list[dict[str, Any]] = []
    keep = np.ones(len(df), bool)
    has_branches = "cooldown" in df.columns and df["cooldown"].fillna(False).astype(bool).any()
    if has_branches and not cooldowns:
        keep &= ~df["cooldown"].fillna(False).astype(bool).to_numpy()
    if "status" in df.columns:
        st = df["status"].astype(str).to_numpy()
        bad = keep & (st != "completed")
        excluded += [{"row": int(i), "reason": f"status={st[i]}"} for i in np.flatnonzero(bad)]
        keep &= ~bad
    require_one_setting(df[keep], where, "a batch/LR law")
    num = {k: pd.to_numeric(df[c], errors="coerce").to_numpy(float) for k, c in cols.items() if c is not None}
    for k, v in num.items():
        bad = keep & ~(np.isfinite(v) & (v > 0))
        excluded += [{"row": int(i), "reason": f"{cols[k]} not a positive number (diverged?)"} for i in np.flatnonzero(bad)]
        keep &= ~bad
    n = num["N"][keep]
    if cols["D"] is not None:
        d = num["D"][keep]
        c = num["C"][keep] if cols["C"] is not None else 6 * n * d
        if cols["C"] is None:
            notes.append("C = 6 N D (no C column)")
    else:
        c = num["C"][keep]
        d = c / (6 * n)
        notes.append("D = C / (6 N) (no D column)")
    b = num["batch"][keep]
    if batch_unit == "sequences" and cols["batch"] in ("batch_tokens",):
        raise FitError(f"--batch-unit sequences, but column {cols['batch']!r} is in tokens (the lab's "
                       "batch_tokens); drop --batch-unit or pass a batch-in-sequences column (batch_seqs)")
    if batch_unit == "tokens" and cols["batch"] in ("batch_seqs", "bs"):
        raise FitError(f"column {cols['batch']!r} counts sequences: pass --batch-unit sequences --seq-len L")
    if batch_unit == "sequences":
        require(seq_len is not None and seq_len > 0, "--batch-unit sequences needs --seq-len L")
        b = b * seq_len
        notes.append(f"batch converted from sequences x {seq_len} tokens")
    lr_, l = num["lr"][keep], num["loss"][keep]
    require(len(l) > 0, "no usable runs")
    require(len(np.unique(b)) >= 2, f"the grid has one batch size ({b[0]:g}); a batch law needs at least 2")
    require(len(np.unique(lr_)) >= 2, f"the grid has one learning rate ({lr_[0]:g}); an LR law needs at least 2")
    if form == "C":
        budget = None
        if "budget" in df.columns and not (has_branches and cooldowns):
            bb = pd.to_numeric(df["budget"], errors="coerce").to_numpy(float)[keep]
            budget = bb if np.all(np.isfinite(bb)) else None
        cell = group_budgets(c, budget, rel_tol=0.1)
    else:  # one cell per model size and D: runs whose D differ by a step's rounding join one cell
        size = np.round(np.log(n), 2)
        dgroup = np.zeros(len(n), int)
        for v in np.unique(size):
            at = size == v
            dgroup[at] = group_budgets(d[at], None, rel_tol=0.05)
        key = list(zip(size.tolist(), dgroup.tolist()))
        uniq = sorted(set(key))
        cell = np.array([uniq.index(k) for k in key])
    cells = []
    for g in range(int(cell.max()) + 1):
        idx = cell == g
        cells.append({"N": float(np.exp(np.mean(np.log(n[idx])))), "D": float(np.exp(np.mean(np.log(d[idx])))),
                      "C": float(np.exp(np.mean(np.log(c[idx])))), "runs": int(idx.sum())})
    if excluded:
        notes.append(f"{len(excluded)} run(s) excluded (diverged, failed or not numeric)")
    return HparamData(n, d, c, b, lr_, l, cell, cells, excluded, notes, {k: v for k, v in cols.items() if v})


def near_optimal(loss: np.ndarray, cell: np.ndarray, band: float, w: np.ndarray | None = None) -> np.ndarray:
    """Rows within ``band`` (relative) of their cell's lowest loss, among rows with weight > 0."""
    present = np.ones(len(loss), bool) if w is None else w > 0
    out = np.zeros(len(loss), bool)
    for g in np.unique(cell):
        idx = (cell == g) & present
        if idx.any():
            best = loss[idx].min()
            out |= idx & (loss <= best * (1 + band))
    return out


# what ln lr_opt and ln B_opt are regressed on, per form
_REGRESSORS = {"C": {"lr": ("C",), "B": ("C",)}, "ND": {"lr": ("N", "D"), "B": ("D",)}}


def _design(h: HparamData, form: str, target: str, only: tuple[str, ...] | None = None) -> np.ndarray:
    """Regressors (with intercept) for ln lr or ln B: those of the form, or ``only`` these."""
    xs = _REGRESSORS[form][target] if only is None else only
    return np.stack([np.ones(len(h.loss))] + [np.log(getattr(h, x)) for x in xs], 1)


def _wlstsq(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    return coef


def _smooth_optima(h: HparamData) -> list[dict[str, Any]]:
    """Per cell: minimum of a quadratic surface of loss over (ln B, ln lr), when it has one inside."""
    out = []
    for g in range(len(h.cells)):
        idx = h.cell == g
        x, y, l = np.log(h.B[idx]), np.log(h.lr[idx]), h.loss[idx]
        if len(np.unique(x)) < 3 or len(np.unique(y)) < 3 or idx.sum() < 6:
            out.append({"ok": False, "reason": "fewer than 3 batch sizes or LRs"})
            continue
        # fit near the optimum: runs within 3% of the best, so far-off divergent corners do not bend it
        sel = l <= l.min() * 1.03
        if sel.sum() < 6:
            sel = np.argsort(l)[:6]
        xs, ys, ls = x[sel], y[sel], l[sel]
        mx, my = xs.mean(), ys.mean()
        u, v = xs - mx, ys - my
        V = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], 1)
        q, *_ = np.linalg.lstsq(V, ls, rcond=None)
        H = np.array([[2 * q[3], q[5]], [q[5], 2 * q[4]]])
        if not np.all(np.linalg.eigvalsh(H) > 0):
            out.append({"ok": False, "reason": "surface has no minimum (not convex near the best runs)"})
            continue
        uv = np.linalg.solve(H, -q[1:3])
        xo, yo = mx + uv[0], my + uv[1]
        inside = x.min() <= xo <= x.max() and y.min() <= yo <= y.max()
        out.append({"ok": bool(inside), "B": float(np.exp(xo)), "lr": float(np.exp(yo)),
                    "reason": "" if inside else "surface minimum outside the swept range"})
    return out


@judged(hparams_health)
@quiet
def fit_hparams(h: HparamData, form: str = "C", band: float = 0.0025, bootstrap: int = 1000, level: float = 0.95,
                seed: int = 0, target_flops: float | None = None) -> FitResult:
    """Fit power laws of the optimal batch size B_opt and peak learning rate lr_opt over compute.

    As DeepSeek LLM (2024, arXiv:2401.02954) and Step Law (Li et al. 2025) fit them: in each cell
    (a compute budget for form C, an (N, D) pair for form ND) the *near-optimal* runs, those with
    ``loss <= (1 + band) * the cell's lowest loss``, are pooled over cells and ln lr and ln B are
    fitted to them by least squares (each near-optimal run weighted equally):

    * form C:  ``B_opt = B_coef * C^B_C_exp``,  ``lr_opt = lr_coef * C^lr_C_exp``;
    * form ND: ``lr_opt = lr_coef * N^lr_N_exp * D^lr_D_exp``,  ``B_opt = B_coef * D^B_D_exp``.

    A second estimate, reported in ``diagnostics`` and ``notes``, fits a quadratic surface of loss
    over (ln B, ln lr) per cell to the runs within 3% of its best (at least its 6 best), takes the
    surface minimum when it is convex and inside the swept range, and fits the same laws through
    those minima. Cells whose best run lies on the edge of the swept B or lr range are flagged.

    Units: B = global batch in tokens, lr = peak learning rate (dimensionless), N = non-embedding
    parameters (the lab's ``params``), D = training tokens, C = training FLOPs (forward + backward)
    as the table gives them: the lab's ``flops`` column counts ``C = 6 D (N + d_model V + n_layers
    seq_len d_attn)`` (:func:`lab.counting.flops_per_token`), or ``C = 6 N D`` when the table has no
    C column; ``FitResult.convention["C"]`` names the column used. Losses in nats/token (the lab's
    ``loss_val``).

    Parameters
    ----------
    h : HparamData
        The batch x LR grid from :func:`load_hparams`: per run N, D, C, B (tokens), lr and loss, and
        the cell each run belongs to (failed and diverged runs already excluded; WSD cooldown
        branches kept as points at their own D unless loaded with ``cooldowns=False``).
    form : {"C", "ND"}, default "C"
        Which laws; must be the form ``h`` was loaded with (it decides the cells).
    band : float, default 0.0025
        Near-optimal band, relative to the cell's lowest loss (0.25%).
    bootstrap : int, default 1000
        Bootstrap resamples K: runs resampled with replacement within their cell, the near-optimal
        band reselected among the drawn runs, both laws refitted. 0 gives no intervals.
    level : float, default 0.95
        Coverage of the bootstrap percentile intervals.
    seed : int, default 0
        Seed of the bootstrap resampling.
    target_flops : float, optional
        Compute C (FLOPs, the data's convention) at which B_opt and lr_opt are predicted; default
        (also when 0) 10 x the largest cell C (a cell's C is the geometric mean of its runs').

    Returns
    -------
    FitResult
        ``law = "hyperparameter laws (form C)"`` or ``"(form ND)"``. ``params``: ``lr_coef``,
        ``lr_C_exp``, ``B_coef`` (tokens at C = 1), ``B_C_exp`` (form C) or ``lr_coef``,
        ``lr_N_exp``, ``lr_D_exp``, ``B_coef``, ``B_D_exp`` (form ND). ``samples`` holds the K
        bootstrap draws of each; ``intervals`` are their percentile intervals at ``level``.
        ``predictions``: ``C`` (the target), ``B_opt`` (tokens), ``lr_opt``, with ``B_opt_interval``
        and ``lr_opt_interval`` (bootstrap percentiles) when bootstrapped; form ND predicts at
        ``N = sqrt(C / 120)``, ``D = 20 N`` (so ``C = 6 N D``), given as ``N``, ``D`` and a ``note``.
        ``diagnostics``: ``n_points``, ``n_cells``, ``band``, ``near_optimal_total``, ``cells`` (per
        cell: ``N``, ``D``, ``C``, ``runs``, ``best_loss``, ``best_B``, ``best_lr``, ``near_optimal``,
        ``edge``), ``excluded`` (= ``dropped``), ``edge_warnings``, ``smooth_fit`` (``params`` of the
        surface-minimum laws or None when fewer cells than needed have an interior minimum,
        ``cells_used``, per-cell ``cells``, and ``gap_at_target``: its B_opt and lr_opt at the target
        as ratios to the band law's) and ``bootstrap``. ``convention``: ``B`` and ``C``. ``notes``:
        the loader's notes, edge warnings, one line per cell and the smooth estimate. ``extra``:
        ``data``, ``near`` (the near-optimal mask), ``form``.

    Raises
    ------
    FitError
        ``band <= 0``; fewer cells than form C's 2 or form ND's 3; any cell with fewer than 4 runs.
    """
    require(band > 0, f"--band must be > 0, got {band}")
    n_cells = len(h.cells)
    need = 2 if form == "C" else 3
    require(n_cells >= need, f"form {form} needs at least {need} cells (budgets or (N, D) pairs), got {n_cells}")
    few = [i for i, c in enumerate(h.cells) if c["runs"] < 4]
    require(not few, "cells with fewer than 4 runs cannot locate an optimum: "
                     + ", ".join(f"C={h.cells[i]['C']:.3g} ({h.cells[i]['runs']} runs)" for i in few[:6]))
    near = near_optimal(h.loss, h.cell, band)
    Xl, Xb = _design(h, form, "lr"), _design(h, form, "B")
    ylr, yb = np.log(h.lr), np.log(h.B)
    w = near.astype(float)
    clr, cb = _wlstsq(Xl, ylr, w), _wlstsq(Xb, yb, w)
    if form == "C":
        names_lr, names_b = ["lr_coef", "lr_C_exp"], ["B_coef", "B_C_exp"]
    else:
        names_lr, names_b = ["lr_coef", "lr_N_exp", "lr_D_exp"], ["B_coef", "B_D_exp"]

    def to_params(cl, cb_):
        p = {names_lr[0]: math.exp(cl[0]), **{k: float(v) for k, v in zip(names_lr[1:], cl[1:])}}
        p.update({names_b[0]: math.exp(cb_[0]), **{k: float(v) for k, v in zip(names_b[1:], cb_[1:])}})
        return p

    params = to_params(clr, cb)
    samples: dict[str, np.ndarray] = {}
    K = int(bootstrap)
    if K > 0:
        rng = np.random.default_rng(seed)
        W = bootstrap_weights(len(h.loss), K, rng, h.cell)
        rows = []
        for k in range(K):
            nk = near_optimal(h.loss, h.cell, band, W[k]).astype(float) * W[k]
            rows.append(to_params(_wlstsq(Xl, ylr, nk), _wlstsq(Xb, yb, nk)))
        samples = {k: np.array([r[k] for r in rows]) for k in params}
    # edges and per-cell summaries
    cells_out, edge = [], []
    for g, c in enumerate(h.cells):
        idx = h.cell == g
        j = np.flatnonzero(idx)[np.argmin(h.loss[idx])]
        on_b = h.B[j] in (h.B[idx].min(), h.B[idx].max())
        on_lr = h.lr[j] in (h.lr[idx].min(), h.lr[idx].max())
        flags = (["batch"] if on_b else []) + (["lr"] if on_lr else [])
        if flags:
            edge.append(f"C={c['C']:.3g} (N={c['N']:.3g}, D={c['D']:.3g}): best run at the edge of the swept "
                        f"{' and '.join(flags)} range; widen the grid there")
        cells_out.append({**c, "best_loss": float(h.loss[j]), "best_B": float(h.B[j]), "best_lr": float(h.lr[j]),
                          "near_optimal": int((near & idx).sum()), "edge": flags})
    # second estimate: smooth surfaces
    smooth = _smooth_optima(h)
    sm_ok = [i for i, s in enumerate(smooth) if s["ok"]]
    smooth_params = None
    if len(sm_ok) >= need:
        ci = np.array(sm_ok)
        hs = HparamData(np.array([h.cells[i]["N"] for i in ci]), np.array([h.cells[i]["D"] for i in ci]),
                        np.array([h.cells[i]["C"] for i in ci]), np.array([smooth[i]["B"] for i in ci]),
                        np.array([smooth[i]["lr"] for i in ci]), np.zeros(len(ci)), np.arange(len(ci)), [], [], [], {})
        one = np.ones(len(ci))
        smooth_params = to_params(_wlstsq(_design(hs, form, "lr"), np.log(hs.lr), one),
                                  _wlstsq(_design(hs, form, "B"), np.log(hs.B), one))
    C_t = float(target_flops) if target_flops else float(10 * max(c["C"] for c in h.cells))
    preds = _predict(params, form, C_t, samples, level)
    gap = None
    if smooth_params is not None:
        sp = _predict(smooth_params, form, C_t, {}, level)
        gap = {"B_opt_ratio": sp["B_opt"] / preds["B_opt"], "lr_opt_ratio": sp["lr_opt"] / preds["lr_opt"]}
    diag = {"n_points": int(len(h.loss)), "n_cells": n_cells, "band": band, "near_optimal_total": int(near.sum()),
            "cells": cells_out, "excluded": h.excluded, "dropped": h.excluded, "edge_warnings": edge,
            "smooth_fit": {"params": smooth_params, "cells_used": len(sm_ok),
                           "cells": [{**h.cells[i], **s} for i, s in enumerate(smooth)], "gap_at_target": gap},
            "bootstrap": K}
    notes = list(h.notes) + edge
    notes += [f"cell C={c['C']:.3g} (N={c['N']:.3g}, D={c['D']:.3g}): {c['runs']} runs, {c['near_optimal']} within "
              f"{band:.2%}; best B={c['best_B']:.4g}, lr={c['best_lr']:.3g}, loss {c['best_loss']:.4f}"
              for c in cells_out]
    if smooth_params is not None:
        notes.append("smooth-surface estimate: " + ", ".join(f"{k}={v:.4g}" for k, v in smooth_params.items())
                     + (f"; at the target it gives B_opt x{gap['B_opt_ratio']:.2f}, lr_opt x{gap['lr_opt_ratio']:.2f} "
                        "the near-optimal-band law's" if gap else ""))
    else:
        notes.append(f"smooth-surface estimate: only {len(sm_ok)} cell(s) have an interior surface minimum; not fitted")
    if form == "C":
        formula = "B_opt = B_coef * C^B_C_exp (tokens), lr_opt = lr_coef * C^lr_C_exp"
    else:
        formula = "lr_opt = lr_coef * N^lr_N_exp * D^lr_D_exp, B_opt = B_coef * D^B_D_exp (tokens)"
    return FitResult(f"hyperparameter laws (form {form})", formula, params, samples, level, preds, diag,
                     {"B": "batch in tokens", "C": h.columns.get("C", "C = 6 N D")}, notes,
                     extra={"data": h, "near": near, "form": form})


def predict_hparams(params: dict[str, float], form: str, C: float | None = None, N: float | None = None,
                    D: float | None = None) -> tuple[float, float]:
    """(B_opt in tokens, lr_opt) from fitted parameters."""
    if form == "C":
        require(C is not None, "form C predicts from C")
        return params["B_coef"] * C ** params["B_C_exp"], params["lr_coef"] * C ** params["lr_C_exp"]
    require(N is not None and D is not None, "form ND predicts from N and D")
    return (params["B_coef"] * D ** params["B_D_exp"],
            params["lr_coef"] * N ** params["lr_N_exp"] * D ** params["lr_D_exp"])


@dataclass
class ResolvedLaw:
    """The batch/LR law a study acts on (:func:`resolved_law`), with its own intervals and verdict."""

    form: str
    params: dict[str, float]
    intervals: dict[str, list[float]]
    predictions: dict[str, Any]
    notes: list[str]
    health: dict[str, Any]


def _fit_fixed(h: HparamData, q: str, free: list[str], fixed: dict[str, float], w: np.ndarray) -> dict[str, float]:
    """ln q = ln coef + sum_x exp_x ln x, least squares over rows weighted ``w``, the ``fixed`` exponents held."""
    y = np.log(getattr(h, "lr" if q == "lr" else "B")) - sum(e * np.log(getattr(h, x)) for x, e in fixed.items())
    coef = _wlstsq(_design(h, "ND", q, tuple(free)), y, w)
    return {f"{q}_coef": math.exp(coef[0]), **{f"{q}_{x}_exp": float(c) for x, c in zip(free, coef[1:])},
            **{f"{q}_{x}_exp": float(e) for x, e in fixed.items()}}


def resolved_law(res: FitResult, bootstrap: int = 200, seed: int = 0, at: dict[str, float] | None = None,
                 floor_batch: float | None = None) -> ResolvedLaw:
    """The law to act on, and how far to trust it.

    An exponent whose bootstrap interval contains 0 is not resolved by the grid (at tiny scales the
    cells' optima move by less than the grid step), so it is held at 0 and the rest refitted to the
    near-optimal runs; the intervals come from a new bootstrap of that reduced law. Its verdict
    grades the optima's intervals at ``at`` (``{"C": ...}`` or ``{"N": ..., "D": ...}``) and keeps
    the fitted law's grid-edge flags, except a best batch at ``floor_batch``: a floor set by choice.
    """
    from lab.fit.health import HealthCriteria, Verdict, _ratio

    form, h = res.extra["form"], res.extra["data"]
    band = res.diagnostics["band"]
    fixed: dict[str, dict[str, float]] = {"lr": {}, "B": {}}
    notes = []
    for q, xs in _REGRESSORS[form].items():
        for x in xs:
            lo, hi = (res.intervals.get(f"{q}_{x}_exp") or [math.nan, math.nan])[:2]
            if lo is not None and hi is not None and lo <= 0 <= hi:
                fixed[q][x] = 0.0
                notes.append(f"{q}_opt: {q}_{x}_exp's 95% interval [{lo:.3g}, {hi:.3g}] contains 0; held at 0, "
                             "the rest refitted to the near-optimal runs")

    def fit(w):
        out = {}
        for q, xs in _REGRESSORS[form].items():
            out.update(_fit_fixed(h, q, [x for x in xs if x not in fixed[q]], fixed[q], w))
        return out

    params = fit(near_optimal(h.loss, h.cell, band).astype(float))
    W = bootstrap_weights(len(h.loss), int(bootstrap), np.random.default_rng(seed), h.cell)
    boot = [fit(near_optimal(h.loss, h.cell, band, w).astype(float) * w) for w in W]
    intervals = {k: list(interval(np.array([b[k] for b in boot]))) for k in params} if boot else {}
    preds: dict[str, Any] = {}
    v = Verdict()
    at_floor = 0
    for c in res.diagnostics["cells"]:
        flags = list(c["edge"])
        if "batch" in flags and floor_batch is not None and c["best_B"] <= floor_batch:
            flags.remove("batch")
            at_floor += 1
        if flags:
            v.flag("weak", f"grid edge: N={c['N']:.3g}, D={c['D']:.3g}: best run at the edge of the swept "
                           f"{' and '.join(flags)} range", "widen the batch x LR grid past the edge named")
    if at_floor:
        notes.append(f"{at_floor} cell(s) have their best batch at the floor {floor_batch:g}, set by choice")
    if at:
        B0, lr0 = predict_hparams(params, form, **at)
        Bs, ls = np.array([predict_hparams(b, form, **at) for b in boot]).reshape(-1, 2).T
        preds = {**at, "B_opt": B0, "lr_opt": lr0,
                 "B_opt_interval": list(interval(Bs)), "lr_opt_interval": list(interval(ls))}
        crit = HealthCriteria()
        for key in ("B_opt", "lr_opt"):
            v.grade(f"{key}_interval_ratio", _ratio(preds[f"{key}_interval"]), crit.n_opt_ratio,
                    f"{key}'s 95% interval spans a wide factor (hi/lo)", "add sizes and budgets to the batch x LR grid")
    return ResolvedLaw(form, params, intervals, preds, notes, v.to_json())


def batch_for(b_opt: float, seq_len: int) -> int:
    """A batch in tokens for a law's B_opt: the nearest power-of-two number of sequences, at least one."""
    return 2 ** max(0, round(math.log2(max(1.0, b_opt / seq_len)))) * seq_len


def load_hparam_law(path: str) -> tuple[str, dict[str, float]]:
    """(form, parameters) of a fitted batch/LR law saved by ``python -m lab.fit hparams ... --json``.

    Raises ValueError naming ``design.hparams`` and the file when it is not such a fit.
    """
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"design.hparams: cannot read {path!r} ({e}); give the JSON of "
                         "`python -m lab.fit hparams SWEEP --json`") from None
    law = str(doc.get("law", "")) if isinstance(doc, dict) else ""
    form = "C" if "form C" in law else "ND" if "form ND" in law else None
    need = {"C": ("B_coef", "B_C_exp", "lr_coef", "lr_C_exp"),
            "ND": ("B_coef", "B_D_exp", "lr_coef", "lr_N_exp", "lr_D_exp")}.get(form or "", ())
    if form is None or not all(isinstance(doc.get(k), (int, float)) for k in need):
        raise ValueError(f"design.hparams: {path} is not a fitted batch/LR law (law {law!r}); give the JSON of "
                         "`python -m lab.fit hparams SWEEP --json`")
    return form, {k: float(doc[k]) for k in need}


def _predict(params, form, C_t, samples, level) -> dict[str, Any]:
    if form == "C":
        b, l = predict_hparams(params, "C", C=C_t)
        out = {"C": C_t, "B_opt": b, "lr_opt": l}
        if samples:
            out["B_opt_interval"] = list(interval(samples["B_coef"] * C_t ** samples["B_C_exp"], level))
            out["lr_opt_interval"] = list(interval(samples["lr_coef"] * C_t ** samples["lr_C_exp"], level))
        return out
    # form ND: predict at the compute-optimal-ish point D = 20 N of C = 6 N D, stated
    N = math.sqrt(C_t / 120)
    D = 20 * N
    b, l = predict_hparams(params, "ND", N=N, D=D)
    out = {"C": C_t, "N": N, "D": D, "B_opt": b, "lr_opt": l, "note": "at N, D with C = 6 N D and D = 20 N"}
    if samples:
        out["B_opt_interval"] = list(interval(samples["B_coef"] * D ** samples["B_D_exp"], level))
        out["lr_opt_interval"] = list(interval(samples["lr_coef"] * N ** samples["lr_N_exp"] * D ** samples["lr_D_exp"],
                                               level))
    return out


def grid_gap(h: HparamData, params: dict[str, float], form: str) -> np.ndarray:
    """Per cell: relative loss gap between the run nearest the law's optimum (in log space) and the best run."""
    gaps = []
    for g, c in enumerate(h.cells):
        idx = np.flatnonzero(h.cell == g)
        b, l = predict_hparams(params, form, C=c["C"], N=c["N"], D=c["D"])
        dist = (np.log(h.B[idx] / b)) ** 2 + (np.log(h.lr[idx] / l)) ** 2
        j = idx[np.argmin(dist)]
        gaps.append(h.loss[j] / h.loss[idx].min() - 1)
    return np.array(gaps)
