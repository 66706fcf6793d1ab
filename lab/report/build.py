"""Build the report: open each folder, fit what it holds, draw, and write one HTML file.

Shared with the notebooks: the same sources (:mod:`lab.report.sources`), fits
(:mod:`lab.report.fits`) and figures (:mod:`lab.plots`); only the page is the report's own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.report import sections as S
from lab.report.fits import Attempt, attempt, hparam_fit, loss_fits, mixing_fits
from lab.report.page import Section, render
from lab.report.sources import Source, open_source


def target_of(src: Source) -> float | None:
    """The study's target compute (None for a plain sweep: the fits' default, 10x its largest budget)."""
    if src.kind != "study":
        return None
    if (src.summary or {}).get("target_flops"):
        return float(src.summary["target_flops"])
    cfg = (src.study or {}).get("config") or {}   # StudyConfig.target_flops, from its stored fields
    got = attempt(lambda: float(cfg["target_factor"]) * max(float(b) for b in cfg["loss"]["budgets"]))
    return got.value


def recipe_of(src: Source, bootstrap: int, seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """The study's recipe, or for a sweep the one ``python -m lab.recipe`` would write (forced past
    an ill-posed verdict, which the recipe then carries): (recipe dict, why there is none)."""
    from lab.recipe import load_recipe

    if src.recipe is not None:
        got = attempt(lambda: load_recipe(src.recipe).to_dict())
        return got.value, got.error
    if src.kind != "sweep" or "loss" not in src.sweeps:
        return None, "no recipe: stage d has not run" if src.kind == "study" else "no loss ladder"
    from lab.recipe.build import build_recipe
    from lab.recipe.format import RecipeError

    from lab.results import load_runs

    runs = load_runs(*src.sweeps["loss"])
    flops = runs.loc[runs["status"] == "completed", "flops"] if "flops" in runs else []
    if not len(flops):
        return None, "no recipe: no completed run in the loss ladder"
    try:
        return build_recipe(src.sweeps["loss"], target_flops=10 * float(flops.max()), bootstrap=bootstrap,
                            seed=seed, force=True).to_dict(), None
    except (RecipeError, ValueError) as e:
        return None, f"no recipe: {e}"


def source_sections(src: Source, bootstrap: int, seed: int, say=print) -> tuple[list[Section], LossFitsOrNone]:
    """Every section one folder supports, in reading order, and its loss fits (for comparisons)."""
    out: list[Section] = []
    dropped: dict[str, list] = {}
    if "hparams" in src.sweeps:
        say(f"[report] {src.name}: batch/LR laws")
        hp = hparam_fit(src.sweeps["hparams"], bootstrap, seed)
        out.append(S.hparams_section(src, hp))
        if hp.ok:
            dropped["batch/LR laws"] = hp.value.diagnostics.get("dropped", [])
    if "mixture" in src.sweeps:
        say(f"[report] {src.name}: mixing law")
        out.append(S.mixing_section(src, mixing_fits(src.sweeps["mixture"], src.stage("mixture").get("target"),
                                                     min(bootstrap, 100), seed)))
    lf = None
    if "loss" in src.sweeps:
        say(f"[report] {src.name}: loss laws")
        lf = loss_fits(src.sweeps["loss"], target_of(src), bootstrap, seed)
        out.append(S.loss_section(src, lf))
        for k, r in lf.ok().items():
            dropped[r.law] = r.diagnostics.get("dropped", [])
    if src.kind != "empty":
        say(f"[report] {src.name}: recipe")
        out.append(S.recipe_section(src, *recipe_of(src, bootstrap, seed)))
    if src.kind in ("study", "demo"):
        out.append(S.backtest_section(src))
    if src.kind != "empty":
        out.append(S.provenance_section(src, dropped))
    return out, lf


LossFitsOrNone = Any


def comparison(a: Source, b: Source, bootstrap: int, seed: int) -> Section:
    """Ladder B over ladder A (the first two folders with a loss ladder)."""
    from lab.fit.compare import compare_ladders
    from lab.results import load_runs

    names = (a.name, b.name) if a.name != b.name else (str(a.path), str(b.path))
    got = attempt(lambda: compare_ladders(load_runs(*a.sweeps["loss"]), load_runs(*b.sweeps["loss"]),
                                          target_flops=target_of(b) or target_of(a), bootstrap=bootstrap,
                                          seed=seed, names=names))
    return S.compare_section(names, got)


def build_report(paths: list[str], out: str | Path, bootstrap: int = 200, seed: int = 0, say=print) -> Path:
    """Write the report on ``paths`` (studies and/or sweeps) to ``out``; the path written."""
    t0 = time.time()
    sources = [open_source(p) for p in paths]
    sections = [S.overview(sources)]
    for src in sources:
        secs, _ = source_sections(src, bootstrap, seed, say)
        sections += secs
    ladders = [s for s in sources if "loss" in s.sweeps]
    if len(ladders) >= 2:
        say(f"[report] comparing {ladders[1].name} over {ladders[0].name}")
        sections.insert(1, comparison(ladders[0], ladders[1], bootstrap, seed))
    title = "lab report: " + ", ".join(s.name for s in sources)
    page = render(title, f"{len(sources)} source(s); fits with {bootstrap} bootstrap resamples; "
                         f"built in {time.time() - t0:.0f} s", sections)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["build_report", "source_sections", "comparison", "recipe_of", "target_of", "Attempt"]
