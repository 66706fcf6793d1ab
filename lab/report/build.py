"""Build the report: open each folder, fit what it holds, draw, and write one HTML file.

Shared with the notebooks: the same sources (:mod:`lab.report.sources`), fits
(:mod:`lab.report.fits`) and figures (:mod:`lab.plots`); only the page is the report's own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from lab.report import sections as S
from lab.report.fits import attempt, hparam_fit, loss_fits, mixing_fits
from lab.report.page import Section, render
from lab.report.sources import Source, open_source


def target_of(src: Source) -> float | None:
    """The study's target compute (None for a plain sweep: the fits' default, 10x its largest budget)."""
    if src.kind == "demo":
        from lab.recipe import load_recipe

        got = attempt(lambda: float(load_recipe(src.recipe).to_dict()["counts"]["flops"]))
        return got.value
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


def guarded(title: str, make: Callable[[], Section]) -> Section:
    """``make()``, or a section saying why it could not be shown: one broken part (an older file
    format, a degenerate fit) must not take the rest of the page with it."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - reported on the page, never swallowed silently
        import matplotlib.pyplot as plt

        plt.close("all")
        sec = Section(title)
        sec.lack(f"section not shown: {type(e).__name__}: {e}")
        return sec


def source_sections(src: Source, bootstrap: int, seed: int, say=print) -> list[Section]:
    """Every section one folder supports, in reading order, each guarded."""
    out: list[Section] = []
    dropped: dict[str, list] = {}
    n = src.label

    def hparams() -> Section:
        hp = hparam_fit(src.sweeps["hparams"], bootstrap, seed)
        if hp.ok:
            dropped["batch/LR laws"] = hp.value.diagnostics.get("dropped", [])
        return S.hparams_section(src, hp)

    def loss() -> Section:
        lf = loss_fits(src.sweeps["loss"], target_of(src), bootstrap, seed)
        dropped.update({r.law: r.diagnostics.get("dropped", []) for r in lf.ok().values()})
        return S.loss_section(src, lf)

    parts = [("hparams" in src.sweeps, "batch/LR laws", f"Hyperparameters: {n}", hparams),
             ("mixture" in src.sweeps, "mixing law", f"Mixture: {n}", lambda: S.mixing_section(src, mixing_fits(
                 src.sweeps["mixture"], src.stage("mixture").get("target"), min(bootstrap, 100), seed))),
             ("loss" in src.sweeps, "loss laws", f"Loss laws: {n}", loss),
             (src.kind != "empty", "recipe", f"Recipe: {n}",
              lambda: S.recipe_section(src, *recipe_of(src, bootstrap, seed))),
             (src.kind in ("study", "demo"), "back-test", f"Back-test: {n}", lambda: S.backtest_section(src)),
             (src.kind != "empty", "provenance", f"Provenance: {n}", lambda: S.provenance_section(src, dropped))]
    for wanted, what, title, make in parts:
        if wanted:
            say(f"[report] {n}: {what}")
            out.append(guarded(title, make))
    return out


def comparison(a: Source, b: Source, bootstrap: int, seed: int, loss: str | None = None) -> Section:
    """Ladder B over ladder A (the first two folders with a loss ladder). Across tokenizers, losses
    in nats/token do not compare: bits per byte are used then (and said)."""
    from lab.fit.compare import compare_ladders
    from lab.results import load_runs

    names = (a.label, b.label)
    ra, rb = load_runs(*a.sweeps["loss"]), load_runs(*b.sweeps["loss"])
    notes = []
    if loss is None and _tokenizers(ra) != _tokenizers(rb) and "bpb_val" in ra and "bpb_val" in rb:
        loss = "bpb_val"
        notes.append("the ladders use different tokenizers: compared in bits per byte (bpb_val), not nats/token")
    got = attempt(lambda: compare_ladders(ra, rb, target_flops=target_of(b) or target_of(a), bootstrap=bootstrap,
                                          seed=seed, names=names, loss=loss))
    sec = guarded(f"Comparing ladders: {names[1]} over {names[0]}", lambda: S.compare_section(names, got))
    for note in notes:
        sec.lack(note)
    return sec


def _tokenizers(runs) -> list[str]:
    cols = [c for c in ("tokenizer", "vocab_size") if c in runs]
    return sorted({"/".join(str(r[c]) for c in cols) for _, r in runs[cols].drop_duplicates().iterrows()}) if cols else []


def label_sources(sources: list[Source]) -> list[Source]:
    """Give each source a unique label (its folder name, or its path when two names collide), so
    section titles and their anchors stay unique."""
    names = [s.name for s in sources]
    for s in sources:
        s.label = s.name if names.count(s.name) == 1 else str(s.path)
    return sources


def build_report(paths: list[str], out: str | Path, bootstrap: int = 200, seed: int = 0, say=print,
                 loss: str | None = None) -> Path:
    """Write the report on ``paths`` (studies and/or sweeps) to ``out``; the path written."""
    t0 = time.time()
    sources = label_sources([open_source(p) for p in paths])
    sections = [S.overview(sources)]
    for src in sources:
        sections += source_sections(src, bootstrap, seed, say)
    ladders = [s for s in sources if "loss" in s.sweeps]
    if len(ladders) >= 2:
        say(f"[report] comparing {ladders[1].label} over {ladders[0].label}")
        cmp = comparison(ladders[0], ladders[1], bootstrap, seed, loss)
        for extra in ladders[2:]:
            cmp.lack(f"{extra.label}: a third ladder is not compared (the page compares the first two given; "
                     f"run python -m lab.report {ladders[0].path} {extra.path} for that pair)")
        sections.insert(1, cmp)
    title = "lab report: " + ", ".join(s.name for s in sources)
    page = render(title, f"{len(sources)} source(s); fits with {bootstrap} bootstrap resamples; "
                         f"built in {time.time() - t0:.0f} s", sections)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["build_report", "source_sections", "comparison", "recipe_of", "target_of", "label_sources", "guarded"]
