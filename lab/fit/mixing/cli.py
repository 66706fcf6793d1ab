"""``python -m lab.fit mixing INPUT ...``: fit, compare, predict with and optimise data-mixing models.

INPUT is a sweep folder (the lab's runs table: ``mix_<domain>`` proportions, ``loss_val_<domain>``
losses) or a table with ``r_<domain>`` / ``loss_<domain>`` columns (``--mix-prefix``/``--loss-prefix``
choose others). ``--method law`` (Ye et al.), ``regression`` (RegMix) or ``both`` side by side with
their held-out errors. ``--target-params N`` switches to nested prediction: per-mixture size laws
predict every mixture at N first, so the mixture is chosen for the full-size run. ``--predict TABLE``
adds predictions for every row of another table (and its error where that table has losses);
``--optimize`` finds the best mixture under ``--min-share``/``--max-share``/``--max-epochs``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from lab.fit.engine.errors import FitError
from lab.fit.engine.points import read_table
from lab.fit.mixing.law import (
    MixData,
    MixModel,
    fit_mixing_law,
    load_mixing,
    one_size,
    pick_prefixes,
    skill,
    target_weights,
)


def add_parser(sub) -> None:
    m = sub.add_parser("mixing", help="data-mixing laws: per-domain loss vs mixture; best mixture")
    m.add_argument("input", help="sweep folder, or a .csv/.parquet table with r_<domain> and loss_<domain> columns")
    m.add_argument("--method", default="law", choices=["law", "regression", "both"])
    m.add_argument("--mix-prefix", help="prefix of the proportion columns (default r_, or the lab's mix_)")
    m.add_argument("--loss-prefix", help="prefix of the loss columns (default loss_, or the lab's loss_val_)")
    m.add_argument("--val-domains", help="comma-separated validation domains to model (default: all)")
    m.add_argument("--target-weights", help="overall target = sum of w_i L_i: 'a=1,b=2' (default: equal weights)")
    m.add_argument("--predict", metavar="TABLE", help="predict every row of this table (a sweep folder or file)")
    m.add_argument("--optimize", action="store_true", help="find the best mixture under the constraints")
    m.add_argument("--min-share", help="'a=0.05,b=0.1': lower bounds on proportions")
    m.add_argument("--max-share", help="'a=0.5': upper bounds on proportions")
    m.add_argument("--max-epochs", type=float, help="cap each domain at this many epochs of its unique tokens")
    m.add_argument("--target-tokens", type=float, help="tokens D of the target run (epoch cap; nested prediction)")
    m.add_argument("--target-params", type=float, help="nested prediction at this N (needs 2+ sizes per mixture)")
    m.add_argument("--size", type=float, help="fit the runs of this N, or the nearest size within 1.5x (default: the largest size with enough runs)")
    m.add_argument("--unique-tokens", help="'a=1e9,b=2e8': unique training tokens per domain (default: the corpus)")
    m.add_argument("--extrapolate", action="store_true", help="let the optimum leave the share range of the "
                                                               "fitted runs (default: stay inside it)")
    m.add_argument("--hull", action="store_true", help="search only inside the convex hull of the fitted runs' "
                                                        "mixtures, where the law interpolates (as lab.recipe does)")
    m.add_argument("--ridge", default="auto", help="law: penalty on the centred t_ij, or auto (held-out choice)")
    m.add_argument("--bootstrap", type=int, default=200, help="bootstrap refits of the law (0: none)")
    m.add_argument("--level", type=float, default=0.95)
    m.add_argument("--cv-folds", type=int, help="held-out folds over mixtures (default: leave-one-out up to 40)")
    m.add_argument("--regressor", default="auto", choices=["auto", "lightgbm", "sklearn"])
    m.add_argument("--iterations", type=int, default=1000, help="boosting rounds of the regression (RegMix: 1000)")
    m.add_argument("--samples", type=int, default=30000, help="candidate mixtures scored by the optimiser")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--json", action="store_true")
    m.add_argument("--plot", metavar="DIR", help="write predicted-vs-actual, slice and optimum plots (PNG, SVG)")


def fit_method(method: str, data: MixData, args) -> MixModel:
    if method == "law":
        try:
            ridge = args.ridge if args.ridge == "auto" else float(args.ridge)
        except ValueError:
            raise FitError(f"--ridge must be 'auto' or a number >= 0, got {args.ridge!r}") from None
        return fit_mixing_law(data, args.bootstrap, ridge=ridge, seed=args.seed, cv_folds=args.cv_folds)
    from lab.fit.mixing.regression import fit_regression
    return fit_regression(data, args.regressor, args.iterations, seed=args.seed, cv_folds=args.cv_folds,
                          levels=(args.level,))


def load_predict_table(path: str, data: MixData, prefixes: tuple[str | None, str | None],
                       target_params: float | None) -> tuple[MixData, list[str]]:
    """Rows to predict: mixture columns over the fitted domains (missing ones are 0); losses when present."""
    df, src = read_table(path)
    mp, lp = pick_prefixes(df, *prefixes)
    cols = [c for c in df.columns if isinstance(c, str) and c.startswith(mp)]
    unknown = [c[len(mp):] for c in cols if c[len(mp):] not in data.domains]
    if unknown:
        raise FitError(f"--predict {src}: unknown training domain(s) {unknown}; the model knows {data.domains}")
    if not cols:
        raise FitError(f"--predict {src}: no mixture columns '{mp}<domain>'")
    notes = []
    for d in data.domains:
        if mp + d not in df.columns:
            df[mp + d] = 0.0
            notes.append(f"--predict: no column {mp + d}; taken as 0")
    for v in data.val_domains:
        if lp + v not in df.columns:
            df[lp + v] = np.nan   # nothing observed: predictions only
    keep = [mp + d for d in data.domains] + [lp + v for v in data.val_domains]
    keep += [c for c in df.columns if c in ("run", "status", "params", "tokens", "cooldown")]
    pdata = load_mixing(df[keep], mp, lp, data.val_domains, allow_missing_loss=True)
    if target_params and pdata.N is not None:
        near = np.abs(np.log(pdata.N / target_params)) < math.log(1.25)
        if not near.all():
            notes.append(f"--predict: kept the {int(near.sum())} of {len(pdata)} rows at N ~ {target_params:.3g} "
                         f"(the size the mixtures are modelled at)")
            pdata = pdata.subset(near)
    pdata.source = src
    return pdata, notes


def _predictions(model: MixModel, pdata: MixData, w: np.ndarray, level: float,
                 fitted_range: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Predictions per row; rows with a share outside the fitted runs' range are flagged (extrapolation)."""
    P = model.predict(pdata.R)
    lo, hi = fitted_range
    outside = (pdata.R < lo[None, :] - 1e-9) | (pdata.R > hi[None, :] + 1e-9)
    rows = []
    for r in range(len(pdata)):
        row: dict[str, Any] = {"id": pdata.ids[r], **{v: float(P[r, k]) for k, v in enumerate(pdata.val_domains)},
                               "target": float(P[r] @ w)}
        if outside[r].any():
            row["outside_fitted_range"] = [d for d, o in zip(pdata.domains, outside[r]) if o]
        if np.isfinite(pdata.L[r]).any():
            row["observed"] = {v: float(pdata.L[r, k]) for k, v in enumerate(pdata.val_domains)
                               if np.isfinite(pdata.L[r, k])}
        rows.append(row)
    out: dict[str, Any] = {"rows": rows}
    if np.isfinite(pdata.L).any():
        err = P - pdata.L
        out["mae"] = {v: float(np.nanmean(np.abs(err[:, k]))) for k, v in enumerate(pdata.val_domains)
                      if np.isfinite(err[:, k]).any()}
        out["mae"]["mean"] = float(np.nanmean(np.abs(err)))
        ok = np.all(np.isfinite(pdata.L), axis=1)
        if ok.any():
            out["target_mae"] = float(np.mean(np.abs((P[ok] - pdata.L[ok]) @ w)))
        out["n_observed"] = int(np.isfinite(pdata.L).any(axis=1).sum())
        inside = ~outside.any(axis=1)
        if outside.any() and inside.any() and np.isfinite(err[inside]).any():
            out["mae_inside_fitted_range"] = float(np.nanmean(np.abs(err[inside])))
            out["n_outside_fitted_range"] = int((~inside).sum())
    return out


def run_mixing(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the command computes, as one JSON-ready dict (models under ``_models`` for plots)."""
    if not 0 < args.level < 1:
        raise FitError(f"--level must lie in (0, 1), e.g. 0.95; got {args.level}")
    vds = [v.strip() for v in args.val_domains.split(",")] if args.val_domains else None
    data = load_mixing(args.input, args.mix_prefix, args.loss_prefix, vds)
    w = target_weights(args.target_weights, data.val_domains)
    box = None
    if not args.optimize and (args.min_share or args.max_share or args.max_epochs):
        raise FitError("--min-share/--max-share/--max-epochs constrain --optimize; add --optimize")
    natural = data.natural
    out: dict[str, Any] = {"input": data.source, "domains": data.domains, "val_domains": data.val_domains,
                           "n_runs": len(data), "dropped": data.dropped, "notes": list(data.notes),
                           "target_weights": {v: float(x) for v, x in zip(data.val_domains, w)},
                           "natural": natural}
    fit_data = data
    if not args.target_params:
        fit_data, note = one_size(data, args.size)
        if note:
            out["notes"].append(note)
    if args.target_params:
        from lab.fit.mixing.nested import nested_predict
        fit_data, rep = nested_predict(data, args.target_params, args.target_tokens)
        out["nested"] = rep
    if args.optimize:
        from lab.fit.mixing.optimize import make_box
        box = make_box(data.domains, args.min_share, args.max_share, args.max_epochs, args.target_tokens,
                       args.unique_tokens or data.unique_tokens,
                       None if args.extrapolate else (fit_data.R.min(axis=0), fit_data.R.max(axis=0)))
    pdata = None
    if args.predict:
        at = args.target_params or (float(np.median(fit_data.N)) if fit_data.N is not None
                                    and np.isfinite(fit_data.N).all() and fit_data.N.max() < 1.05 * fit_data.N.min()
                                    else None)
        pdata, notes = load_predict_table(args.predict, data, (args.mix_prefix, args.loss_prefix), at)
        out["notes"] += notes
        if not len(pdata):
            out["notes"].append(f"--predict: no rows left to predict in {args.predict}")
    methods = ["law", "regression"] if args.method == "both" else [args.method]
    models: dict[str, MixModel] = {}
    for meth in methods:
        model = fit_method(meth, fit_data, args)
        models[meth] = model
        res: dict[str, Any] = {"method": meth, "n_fit_rows": len(fit_data)}
        if meth == "law":
            res["formula"] = "L_i(r) = c_i + k_i exp(sum_j t_ij r_j), gauge sum_j t_ij = 0"
            res["params"] = model.summary()
            res["intervals"] = model.intervals(args.level)
        else:
            res.update(model.summary())
        diag = dict(model.diagnostics)
        diag["held_out"] = {k: v for k, v in diag.get("held_out", {}).items() if k != "predicted"}
        if diag["held_out"].get("folds"):
            diag["held_out"]["skill"] = skill(diag["held_out"])
        res["diagnostics"] = diag
        if pdata is not None and len(pdata):
            res["predictions"] = _predictions(model, pdata, w, args.level,
                                              (fit_data.R.min(axis=0), fit_data.R.max(axis=0)))
        if box is not None:
            from lab.fit.mixing.optimize import optimize
            res["optimum"] = optimize(model, w, box, natural, args.samples, level=args.level, seed=args.seed,
                                      hull=fit_data.R if args.hull else None)
        out[meth] = res
    if len(methods) == 2:
        cmp: dict[str, Any] = {"held_out_mae": {m: out[m]["diagnostics"]["held_out"].get("mae", {}).get("mean")
                                                for m in methods}}
        if pdata is not None and "mae" in out["law"].get("predictions", {}):
            cmp["predict_mae"] = {m: out[m]["predictions"]["mae"]["mean"] for m in methods}
        out["comparison"] = cmp
    out["_models"], out["_data"], out["_fit_data"], out["_pdata"] = models, data, fit_data, pdata
    return out


def public(out: dict[str, Any], method: str) -> dict[str, Any]:
    """The JSON object: one method's results at the top level, or both side by side."""
    clean = {k: v for k, v in out.items() if not k.startswith("_")}
    if method != "both":
        res = clean.pop(method)
        clean.update(res)
        if "predictions" in res:
            clean["predictions"] = [{k: v for k, v in r.items()} for r in res["predictions"]["rows"]]
            clean["prediction_error"] = {k: v for k, v in res["predictions"].items() if k != "rows"}
    return clean


def report(out: dict[str, Any]) -> str:
    from lab.fit.mixing.optimize import format_optimum
    lines = [f"== data mixing: {out['n_runs']} runs, training domains {', '.join(out['domains'])}",
             f"   validation domains {', '.join(out['val_domains'])}"]
    if out["dropped"]:
        lines.append(f"   dropped {len(out['dropped'])} rows: " + "; ".join(f"{d['id']} ({d['reason']})"
                                                                      for d in out["dropped"][:5]))
    if "nested" in out:
        n = out["nested"]
        lines.append(f"   nested: {n['mixtures']} mixtures x sizes {', '.join(f'{s:.3g}' for s in n['sizes'])} -> "
                     f"N = {n['target_params']:.3g}, D = {n['target_tokens']:.3g} ({n['extrapolation']:.1f}x the "
                     f"largest proxy); {n['form']}")
        lines.append("   size-law exponents: " + ", ".join(f"{v} {f['alpha']:.3f}" for v, f in n["size_law"].items())
                     + f"; fit MAE {n['size_law_fit_mae']['mean']:.4f}")
    for meth in ("law", "regression"):
        if meth not in out:
            continue
        r = out[meth]
        ho = r["diagnostics"].get("held_out", {})
        lines.append(f"-- {meth}" + (f" ({r.get('regressor')})" if meth == "regression" else f": {r['formula']}"))
        if meth == "law":
            for v, p in r["params"].items():
                ts = " ".join(f"{d}={x:+.2f}" for d, x in p["t"].items())
                lines.append(f"   {v:<18s} c={p['c']:.4f} k={p['k']:.4g}  t: {ts}")
        fm = r["diagnostics"].get("fit_mae", {})
        lines.append(f"   fit MAE {fm.get('mean', math.nan):.4f} nats/token; held-out ({ho.get('kind', 'none')}) "
                     f"MAE {ho.get('mae', {}).get('mean', math.nan):.4f} vs {ho.get('baseline_mae', {}).get('mean', math.nan):.4f}"
                     f" ignoring the mixture (skill {ho.get('skill', math.nan):.2f})")
        if "predictions" in r:
            p = r["predictions"]
            lines.append(f"   --predict: {len(p['rows'])} rows" + (
                f", observed on {p['n_observed']}: MAE {p['mae']['mean']:.4f} per domain, "
                f"{p.get('target_mae', math.nan):.4f} on the target" if "mae" in p else "")
                + (f"; {p['n_outside_fitted_range']} rows lie outside the fitted runs' share range, MAE on the "
                   f"rest {p['mae_inside_fitted_range']:.4f}" if "n_outside_fitted_range" in p else ""))
        if "optimum" in r:
            lines.append(format_optimum(r["optimum"]))
    if "comparison" in out:
        c = out["comparison"]
        lines.append("-- comparison: held-out MAE " + ", ".join(f"{m} {v:.4f}" for m, v in c["held_out_mae"].items()
                                                                  if v is not None))
        if "predict_mae" in c:
            lines.append("   on --predict rows: " + ", ".join(f"{m} {v:.4f}" for m, v in c["predict_mae"].items()))
    return "\n".join(lines)

