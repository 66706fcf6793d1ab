"""Run a study's stages in order, resuming: a stage recorded ``done`` in ``study.json`` is skipped,
and a stage that fails is recorded with its error (its finished runs are kept for the relaunch)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from lab.study.stages import (
    Study,
    full_seeds,
    stage_backtest,
    stage_full,
    stage_hparams,
    stage_loss,
    stage_mixture,
    stage_recipe,
)
from lab.study.state import LETTERS, STAGES


def stage_summary(s: Study) -> dict[str, Any]:
    """Every stage's laws, verdicts and costs in ``summary.json``, and a few lines on the terminal."""
    doc = summarize(s)
    path = s.out / "summary.json"
    from lab.fit.engine.result import to_jsonable

    path.write_text(json.dumps(to_jsonable(doc), indent=1))
    for line in summary_lines(doc):
        print(line, flush=True)
    s.say(f"summary -> {path}")
    return {"path": str(path), "report": write_report(s)}


def write_report(s: Study) -> str | None:
    """The study's HTML report beside its summary (``python -m lab.report`` on the folder); a report
    that cannot be written is said, and leaves the study's own outcome alone."""
    from lab.report.build import build_report

    t0 = time.time()
    try:
        path = build_report([str(s.out)], s.out / "report.html", bootstrap=min(s.cfg.bootstrap, 200), seed=s.cfg.seed,
                            say=lambda m: None)
    except Exception as e:  # noqa: BLE001 - the study's results stand without their report
        s.say(f"report not written: {type(e).__name__}: {e} (python -m lab.report {s.out} retries)")
        return None
    s.say(f"report -> {path} ({time.time() - t0:.0f} s)")
    return str(path)


def _cost(st: dict[str, Any]) -> dict[str, Any]:
    runs = st.get("sweeps_run", [])
    return {"status": st.get("status"), "wall_s": st.get("wall_s"),
            "flops": sum(r["planned_flops"] for r in runs) or st.get("flops"),
            "runs": sum(r["jobs"] for r in runs) or None, "failed": sum(r["failed"] for r in runs)}


def summarize(s: Study) -> dict[str, Any]:
    """The study's record condensed: per stage its cost and verdict, then the recipe and the back-test."""
    stages = {}
    for name in STAGES[:-1]:
        st = s.state.stage(name)
        stages[name] = {**_cost(st), "verdict": (st.get("health") or {}).get("verdict")}
    a, b, d, f = (s.state.stage(n) for n in ("hparams", "mixture", "recipe", "backtest"))
    return {
        "study": s.cfg.name, "seed": s.cfg.seed, "target_flops": s.cfg.target_flops, "stages": stages,
        "total_wall_s": sum(v["wall_s"] or 0 for v in stages.values()),
        "hparams": {k: a.get(k) for k in ("params", "intervals", "predictions", "edge_warnings", "health")},
        "mixture": {"mixture": b.get("mixture"), "how": (b.get("law") or {}).get("how"),
                    "held_out_mae": (b.get("law") or {}).get("held_out_mae"), "health": b.get("health")},
        "loss_seeds": s.state.stage("loss").get("seeds"),
        "recipe": {k: d.get(k) for k in ("recipe", "counts", "train", "mixture", "prediction", "health", "fitted", "law")},
        "backtest": f or None,
    }


def summary_lines(doc: dict[str, Any]) -> list[str]:
    lines = [f"[study] {doc['study']} (seed {doc['seed']}), target C = {doc['target_flops']:.3g} FLOPs:"]
    for name, v in doc["stages"].items():
        cost = f"{(v['wall_s'] or 0) / 60:5.1f} min"
        extra = f", {v['runs']} runs, {v['flops']:.3g} FLOPs" if v.get("runs") else ""
        lines.append(f"  {LETTERS[name]} {name:<9s} {v['status'] or '-':<8s} {cost}{extra}"
                     + (f", health {v['verdict']}" if v.get("verdict") else ""))
    r = doc["recipe"]
    if r.get("counts"):
        c, p = r["counts"], r["prediction"]
        lo, hi = p["loss_val_interval"]
        lines.append(f"  recipe: N = {c['params']:,}, D = {c['tokens']:.3g}, batch {r['train']['batch_tokens']}, "
                     f"lr {r['train']['lr']:.3g}; predicted loss {p['loss_val']:.4f} [{lo:.4f}, {hi:.4f}]")
    bt = doc.get("backtest")
    if bt:
        fl = bt["floor"]
        per_seed = ", ".join(f"{v:+.2f}%" for v in (bt.get("per_seed") or {}).values())
        lines.append(f"  back-test: error {bt['rel_error_pct']:+.2f}% vs {bt.get('achieved_by', 'the run')} "
                     f"(per seed {per_seed}; 95% half-width {bt['half_width_pct']:.2f}%, covered: {bt['covered']}); "
                     f"seed floor {fl.get('std_pct') or float('nan'):.2f}% std ({fl['seeds']} seeds)")
    lines.append(f"  total {doc['total_wall_s'] / 60:.1f} min")
    return lines


FUNCS: dict[str, Callable[[Study], dict[str, Any]]] = {
    "hparams": stage_hparams, "mixture": stage_mixture, "loss": stage_loss, "recipe": stage_recipe,
    "full": stage_full, "backtest": stage_backtest, "summary": stage_summary,
}


def _more_seeds(s: Study, name: str) -> bool:
    """Stage e is done, but with fewer seeds than the study now asks for (``--full-seeds``)."""
    runs = s.state.stage(name).get("runs") or {}
    return name == "full" and set(runs) != {str(sd) for sd in full_seeds(s.cfg)}


def run_study(s: Study, stages: list[str]) -> None:
    """Run ``stages`` in order; done ones are skipped (the summary is always rewritten), unless an
    earlier stage ran in this launch or stage e has fewer seeds than asked: then they run again
    (their finished runs are reused)."""
    ran = False
    for name in stages:
        tag = f"stage {LETTERS[name]}/g {name}"
        if s.state.done(name) and name != "summary" and not ran and not _more_seeds(s, name):
            s.say(f"{tag}: done (recorded in {s.state.path}); skipped")
            continue
        ran = True
        s.say(f"{tag}: starting")
        prior = s.state.stage(name).get("wall_s") or 0.0  # a stage's cost adds up over its launches
        t0 = time.time()
        s.state.record(name, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        try:
            out = FUNCS[name](s)
        except BaseException as e:
            s.state.record(name, status="failed", error=f"{type(e).__name__}: {e}", wall_s=prior + time.time() - t0)
            if isinstance(e, Exception):
                write_report(s)  # what the finished stages found, with the failure said on the page
            raise
        s.state.record(name, status="done", wall_s=prior + time.time() - t0, error=None, **out)
        s.say(f"{tag}: done in {(time.time() - t0) / 60:.1f} min")
