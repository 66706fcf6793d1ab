"""``python -m lab.bench.fit``: how fast approach 3 fits, against a scipy loop measured in the same run.

The workload is the issue's: the full 4500-start initialisation grid plus 1000 bootstrap refits, on
the 240 Chinchilla points of Besiroglu et al. when ``../shared/reference`` has them, else on 240
synthetic points of the same shape. The baseline is what the straightforward code does: one
``scipy.optimize.minimize(method="L-BFGS-B")`` per start with the same objective and analytic
gradient; it is timed on a sample of starts and scaled to the grid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from lab.fit.engine.laws import Parametric, objective
from lab.fit.engine.points import load_points
from lab.fit.loss.chinchilla import approach3
from lab.paths import reference_dir

_ref = reference_dir()
REF = (_ref / "epoch-chinchilla" / "svg_extracted_data.csv") if _ref else Path("/nonexistent")


def workload() -> tuple[pd.DataFrame, dict, str]:
    if REF.exists():
        df = pd.read_csv(REF)
        df = df[df["loss"] < np.sort(df["loss"])[-5]]
        return df, dict(N="Model Size", C="Training FLOP", loss="loss"), f"Chinchilla points ({REF})"
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 240))
    C = np.exp(rng.uniform(np.log(6e18), np.log(3e21), 240))
    D = C / (6 * N)
    L = (1.82 + 482 / N ** 0.348 + 2085 / D ** 0.366) * np.exp(rng.normal(0, 0.01, 240))
    return pd.DataFrame({"N": N, "C": C, "loss": L}), dict(N="N", C="C", loss="loss"), "240 synthetic points"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.bench.fit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--baseline-starts", type=int, default=150, help="starts timed for the scipy baseline")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    df, cols, what = workload()
    pts = load_points(df, **cols)
    t0 = time.perf_counter()
    r = approach3(pts, bootstrap=args.bootstrap, holdout=False)
    ours = time.perf_counter() - t0

    law = Parametric()
    X = {"lnN": np.log(pts.N), "lnD": np.log(pts.D)}
    y = np.log(pts.loss)
    starts = law.starts(X, y)
    f = objective(law, X, y, None, 1e-3)
    pick = np.random.default_rng(0).choice(len(starts), args.baseline_starts, replace=False)
    t0 = time.perf_counter()
    best = np.inf
    for s in starts[pick]:
        res = minimize(lambda th: tuple(v[0] for v in f(th[None, :], np.array([0]))), s, jac=True, method="L-BFGS-B")
        best = min(best, res.fun)
    per_start = (time.perf_counter() - t0) / args.baseline_starts
    baseline = per_start * (len(starts) + args.bootstrap)
    out = {"data": what, "points": len(pts), "starts": len(starts), "bootstrap": args.bootstrap,
           "lab_s": ours, "scipy_loop_s_estimated": baseline, "speedup": baseline / ours,
           "objective": r.diagnostics["objective"]}
    print(f"[bench] approach 3 on {what}: {len(starts)} starts + {args.bootstrap} bootstrap refits")
    print(f"  lab (batched L-BFGS):   {ours:7.2f} s")
    print(f"  scipy loop (estimated): {baseline:7.2f} s  ({per_start * 1e3:.1f} ms per fit, timed on "
          f"{args.baseline_starts} starts)")
    print(f"  speed-up: {baseline / ours:.1f}x; best objective {r.diagnostics['objective']:.10g}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
