"""``python -m lab.study.compare STUDY_A STUDY_B``: is the study stable under a change of seed?

Reads both studies' ``summary.json`` and prints, against the issue's targets: N_opt of the two
recipes (ratio, target <= 1.5x), their predicted losses (difference, target <= 0.5%), each
back-test's error beside its interval's half-width and the seed floor of its target run, and the
mixtures chosen. ``--json`` prints the same as one object. Exit status 2 when a folder holds no
summary (run the study's last stage, g, first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TARGETS = {"n_opt_ratio": 1.5, "loss_diff_pct": 0.5, "backtest_error_pct": 1.0, "half_width_pct": 3.0}


def load_summary(folder: str) -> dict[str, Any]:
    path = Path(folder) / "summary.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: no readable study summary ({e}); run the study's stage g first") from None
    if not (doc.get("recipe") or {}).get("counts"):
        raise ValueError(f"{path}: the study has no recipe yet (stage d did not finish)")
    return doc


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The stability figures of two studies' summaries."""
    na, nb = (float(s["recipe"]["counts"]["params"]) for s in (a, b))
    la, lb = (float(s["recipe"]["prediction"]["loss_val"]) for s in (a, b))
    out = {"n_opt": [na, nb], "n_opt_ratio": max(na, nb) / min(na, nb),
           "predicted_loss": [la, lb], "loss_diff_pct": 100 * abs(la - lb) / min(la, lb),
           "mixtures": [a["recipe"].get("mixture"), b["recipe"].get("mixture")], "backtests": []}
    for s in (a, b):
        bt = s.get("backtest") or {}
        out["backtests"].append({k: bt.get(k) for k in ("rel_error_pct", "half_width_pct", "covered",
                                                        "rel_error_vs_seed_mean_pct", "floor")})
    out["meets"] = {"n_opt_ratio": out["n_opt_ratio"] <= TARGETS["n_opt_ratio"],
                    "loss_diff_pct": out["loss_diff_pct"] <= TARGETS["loss_diff_pct"]}
    return out


def lines(c: dict[str, Any], names: list[str]) -> list[str]:
    ok = lambda x: "meets" if x else "MISSES"  # noqa: E731
    out = [f"N_opt: {c['n_opt'][0]:,.0f} vs {c['n_opt'][1]:,.0f}: ratio {c['n_opt_ratio']:.2f} "
           f"(target <= {TARGETS['n_opt_ratio']}: {ok(c['meets']['n_opt_ratio'])})",
           f"predicted loss: {c['predicted_loss'][0]:.4f} vs {c['predicted_loss'][1]:.4f}: {c['loss_diff_pct']:.2f}% apart "
           f"(target <= {TARGETS['loss_diff_pct']}%: {ok(c['meets']['loss_diff_pct'])})"]
    for name, bt in zip(names, c["backtests"]):
        if bt.get("rel_error_pct") is None:
            out.append(f"{name}: no back-test yet")
            continue
        fl = bt.get("floor") or {}
        std = fl.get("std_pct")
        out.append(f"{name}: back-test error {bt['rel_error_pct']:+.2f}% (95% half-width {bt['half_width_pct']:.2f}%, "
                   f"covered: {bt['covered']}); vs the mean of {fl.get('seeds')} seeds "
                   f"{bt['rel_error_vs_seed_mean_pct'] if bt['rel_error_vs_seed_mean_pct'] is not None else float('nan'):+.2f}%; "
                   f"seed floor {std if std is not None else float('nan'):.2f}% std")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.study.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs=2, help="two study folders (their summary.json)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        a, b = (load_summary(f) for f in args.studies)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = compare(a, b)
    print(json.dumps(c, indent=1) if args.json else "\n".join(lines(c, args.studies)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
