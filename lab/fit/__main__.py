"""``python -m lab.fit {kaplan,chinchilla,hparams,mixing} INPUT [options]``: fit laws to a sweep or a table.

INPUT is a sweep folder (read through :mod:`lab.results`, curves included) or a CSV/Parquet table.
Columns default to the lab's (``params``, ``tokens``, ``flops``, ``loss_val``) or common aliases;
``--N/--D/--C/--loss`` choose others. With only N and C, D = C / (6 N) (the output says so).

Without ``--json`` a readable report; with it, one JSON object: for one law (``--approach 1|2|3``,
``--form N|D|C|ND``) its parameters under their published names at the top level, beside
``intervals``, ``se``, ``predictions``, ``diagnostics``, ``convention`` and ``notes``; for
``--approach all`` one such object per approach; for Kaplan's default ``--form all`` the
single-variable laws' keys (``N_c``, ``alpha_N``, ``D_c``, ``alpha_D``, ``C_c``, ``alpha_C``) at the top
level and the joint law under ``"joint"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lab.fit.engine.errors import FitError
from lab.fit.engine.points import Points, load_points
from lab.fit.engine.result import FitResult


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="sweep folder, or a .csv/.parquet table")
    p.add_argument("--N", dest="N_col", help="column of N (default: params, or an alias)")
    p.add_argument("--D", dest="D_col", help="column of D, tokens (default: tokens; derived as C/(6N) if absent)")
    p.add_argument("--C", dest="C_col", help="column of C, training FLOPs (default: flops; 6ND if absent)")
    p.add_argument("--loss", dest="loss_col", help="column of the loss (default: loss_val)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (0: none)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--target-flops", type=float, help="compute at which to predict N_opt, D_opt, loss "
                                                      "(default: 10x the largest C in the data)")
    p.add_argument("--drop-highest", type=int, default=0, metavar="K",
                   help="leave out the K highest-loss points (Besiroglu et al. drop 5), reported as dropped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cooldowns", choices=["keep", "drop"], default="keep",
                   help="WSD cooldown-branch rows: points at their own (D, C) (keep, default) or dropped")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    p.add_argument("--plot", metavar="DIR", help="write the law's plots (PNG and SVG) into DIR")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m lab.fit", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="law", required=True)
    k = sub.add_parser("kaplan", help="Kaplan et al. 2020: L(N), L(D), L(C), L(N, D)")
    _common(k)
    k.add_argument("--form", default="all", choices=["N", "D", "C", "ND", "all"])
    k.add_argument("--irreducible", action="store_true", help="add an irreducible loss E to each law")
    k.add_argument("--huber-delta", type=float, default=1e-3)
    c = sub.add_parser("chinchilla", help="Hoffmann et al. 2022: approaches 1, 2, 3")
    _common(c)
    c.add_argument("--approach", default="3", choices=["1", "2", "3", "all"])
    c.add_argument("--huber-delta", type=float, default=1e-3, help="approach 3's Huber delta (default 1e-3)")
    c.add_argument("--window", type=float, help="approach 2: fit each parabola to runs within this factor in N "
                                                "of the budget's best run (default: all runs)")
    c.add_argument("--curves", choices=["auto", "none"], default="auto",
                   help="approach 1: use evaluation curves when INPUT is a sweep folder (auto) or final points only")
    h = sub.add_parser("hparams", help="batch-size and LR laws: B_opt, lr_opt vs C (or N and D)")
    h.add_argument("input", help="sweep folder, or a .csv/.parquet table of a batch x LR grid")
    h.add_argument("--form", default="C", choices=["C", "ND"])
    h.add_argument("--band", type=float, default=0.0025, help="near-optimal band, relative (default 0.25%%)")
    for k in ("N", "D", "C", "batch", "lr", "loss"):
        h.add_argument(f"--{k}", dest=f"{k}_col")
    h.add_argument("--batch-unit", default="tokens", choices=["tokens", "sequences"])
    h.add_argument("--seq-len", type=int)
    h.add_argument("--bootstrap", type=int, default=1000)
    h.add_argument("--level", type=float, default=0.95)
    h.add_argument("--target-flops", type=float)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--json", action="store_true")
    h.add_argument("--plot", metavar="DIR", help="write per-budget heatmaps and the fitted laws (PNG and SVG)")
    from lab.fit.mixing.cli import add_parser
    add_parser(sub)
    return ap


def _load(args) -> tuple[Points, Any]:
    pts = load_points(args.input, args.N_col, args.D_col, args.C_col, args.loss_col,
                      cooldowns=args.cooldowns == "keep")
    if args.drop_highest:
        if args.drop_highest >= len(pts):
            raise FitError(f"--drop-highest {args.drop_highest} would leave no points (there are {len(pts)})")
        thresh = np.sort(pts.loss)[-args.drop_highest]
        pts = pts.subset(pts.loss < thresh, f"among the {args.drop_highest} highest losses (--drop-highest)")
    curves = None
    if Path(args.input).is_dir() and getattr(args, "curves", "auto") == "auto":
        from lab.results import load_curves
        curves = load_curves(args.input)
    return pts, curves


def run(args) -> dict[str, FitResult | str]:
    """Fit what ``args`` ask for; a law that cannot be fitted maps to its error message."""
    if args.law == "hparams":
        from lab.fit.hparams import fit_hparams, load_hparams
        hd = load_hparams(args.input, args.form, args.N_col, args.D_col, args.C_col, args.batch_col, args.batch_unit,
                          args.seq_len, args.lr_col, args.loss_col)
        return {"hparams": fit_hparams(hd, args.form, args.band, args.bootstrap, args.level, args.seed,
                                       args.target_flops)}
    pts, curves = _load(args)
    common = dict(bootstrap=args.bootstrap, target_flops=args.target_flops, level=args.level, seed=args.seed)
    out: dict[str, FitResult | str] = {}
    if args.law == "chinchilla":
        from lab.fit.loss import chinchilla as ch
        todo = ["1", "2", "3"] if args.approach == "all" else [args.approach]
        for a in todo:
            try:
                if a == "1":
                    out["approach1"] = ch.approach1(pts, curves=curves, **common)
                elif a == "2":
                    out["approach2"] = ch.approach2(pts, window=args.window, **common)
                else:
                    out["approach3"] = ch.approach3(pts, delta=args.huber_delta, **common)
            except FitError as e:
                if len(todo) == 1:
                    raise
                out[f"approach{a}"] = str(e)
    else:
        from lab.fit.loss.kaplan import fit_kaplan
        todo = ["N", "D", "C", "ND"] if args.form == "all" else [args.form]
        for f in todo:
            try:
                out[f] = fit_kaplan(pts, f, curves=curves, irreducible=args.irreducible, delta=args.huber_delta, **common)
            except FitError as e:
                if len(todo) == 1:
                    raise
                out[f] = str(e)
    return out


def to_json(args, results: dict[str, FitResult | str]) -> dict[str, Any]:
    def one(r):
        return r.to_json() if isinstance(r, FitResult) else {"error": r}

    if len(results) == 1:
        return one(next(iter(results.values())))
    if args.law == "chinchilla":
        return {k: one(v) for k, v in results.items()}
    # Kaplan, all forms: the single-variable laws' keys flat, the joint law nested
    obj: dict[str, Any] = {"law": "kaplan", "intervals": {}, "se": {}, "predictions": {}, "diagnostics": {},
                           "errors": {}}
    for form in ("N", "D", "C"):
        r = results.get(form)
        if isinstance(r, FitResult):
            j = r.to_json()
            for k, v in r.params.items():
                obj[k if k != "E" else f"E_{form}"] = j[k]
            for k in ("intervals", "se"):
                obj[k].update({(kk if kk != "E" else f"E_{form}"): vv for kk, vv in j[k].items()
                               if kk in r.params})
            obj["predictions"][f"L({form})"] = j["predictions"]
            obj["diagnostics"][f"L({form})"] = j["diagnostics"]
            obj["convention"] = j["convention"]
            obj["notes"] = j["notes"]
        elif r is not None:
            obj["errors"][f"L({form})"] = r
    obj["joint"] = one(results["ND"]) if "ND" in results else None
    return obj


def main_mixing(args) -> int:
    from lab.fit.mixing.cli import public, report, run_mixing
    t0 = time.perf_counter()
    try:
        out = run_mixing(args)
    except FitError as e:
        print(f"lab.fit: error: {e}", file=sys.stderr)
        return 2
    if args.plot:
        from lab.plots.mixing import save_mixing_plots
        opts = {m: out[m]["optimum"] for m in out["_models"] if "optimum" in out[m]}
        held = None
        if out["_pdata"] is not None and np.isfinite(out["_pdata"].L).any():
            held = (out["_pdata"], {m: mod.predict(out["_pdata"].R) for m, mod in out["_models"].items()})
        for w in save_mixing_plots(out["_fit_data"], out["_models"], opts, args.plot, heldout=held):
            if not args.json:
                print(f"[plot] {w}")
    if args.json:
        print(json.dumps(_finite(public(out, args.method)), indent=1, allow_nan=False))
    else:
        print(report(out))
        print(f"[fit] mixing on {args.input} in {time.perf_counter() - t0:.1f}s")
    return 0


def _finite(v: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, np.ndarray):
        return _finite(v.tolist())
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def main(argv: list[str] | None = None) -> int:
    from lab.cli import join_negative_numbers

    args = build_parser().parse_args(join_negative_numbers(argv))
    if args.law == "mixing":
        return main_mixing(args)
    t0 = time.perf_counter()
    try:
        results = run(args)
    except FitError as e:
        print(f"lab.fit: error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    if args.plot:
        from lab.plots.loss import save_plots
        written = save_plots(results, args.plot)
        if not args.json:
            for w in written:
                print(f"[plot] {w}")
    agree = None
    if args.law == "chinchilla" and len(results) > 1:
        from lab.fit.health import agreement

        agree = agreement(results)
    if args.json:
        obj = to_json(args, results)
        if agree is not None:
            obj["agreement"] = agree.to_json()
        print(json.dumps(obj, indent=1, allow_nan=False))
    else:
        from lab.fit.health import Verdict

        for name, r in results.items():
            print(r.report() if isinstance(r, FitResult) else f"== {name}: not fitted: {r}")
            if isinstance(r, FitResult) and "health" in r.diagnostics:
                print(Verdict(**r.diagnostics["health"]).report())
            print()
        if agree is not None:
            print("== approaches 1-3 at the target: " + agree.report())
        print(f"[fit] {args.law} on {args.input} in {wall:.1f}s")
    if all(isinstance(r, str) for r in results.values()):  # every law asked for failed: the job was not done
        why = "; ".join(f"{k}: {v}" for k, v in results.items())
        print(f"lab.fit: error: no {args.law} law could be fitted to {args.input} ({why})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
