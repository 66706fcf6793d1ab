"""What a folder given to the report or a notebook holds: a study (``study.json``), a sweep (run
folders), or nothing usable, and, for each part, either the paths to read or what is missing.

Everything is read as JSON/YAML/Parquet through :mod:`lab.results` and :mod:`lab.io`: no pickle,
no code from the folder runs. Nothing here fits; :mod:`lab.report.fits` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab.io import read_json

ROLES = ("hparams", "mixture", "loss")
ROLE_TITLES = {"hparams": "batch x LR sweep", "mixture": "mixture sweep", "loss": "loss-law ladder"}
OK = ("completed",)


@dataclass
class Source:
    """One folder: its kind, its sweeps by role, the recipe and back-tests, and what is missing."""

    path: Path
    kind: str                                               # "study", "demo", "sweep" or "empty"
    sweeps: dict[str, list[str]] = field(default_factory=dict)
    study: dict[str, Any] | None = None                     # study.json
    summary: dict[str, Any] | None = None                   # summary.json
    recipe: Path | None = None
    backtests: dict[str, dict[str, Any]] = field(default_factory=dict)  # seed -> backtest.json
    problems: list[str] = field(default_factory=list)
    label: str = ""                                         # unique among a report's sources (its name)

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def stage(self, name: str) -> dict[str, Any]:
        return ((self.study or {}).get("stages") or {}).get(name) or {}


def runs_table(dirs: list[str]) -> pd.DataFrame:
    """The runs table of sweep folders (empty when none has a run)."""
    from lab.results import load_runs

    return load_runs(*dirs) if dirs else pd.DataFrame()


def run_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: a WSD run's cooldown branches are extra rows of the table, not runs."""
    return runs[~runs["cooldown"].fillna(False).astype(bool)] if "cooldown" in runs else runs


def open_source(path: str | Path) -> Source:
    """Classify ``path`` and list its parts; problems are sentences, never exceptions."""
    p = Path(path)
    if not p.is_dir():
        return Source(p, "empty", problems=[f"{p}: not a folder"])
    if (p / "study.json").is_file():
        return _open_study(p)
    if (p / "recipe.yaml").is_file() and (p / "sweep").is_dir():
        return _open_demo(p)
    from lab.results import find_runs

    if find_runs(p):
        src = Source(p, "sweep", sweeps={role: [str(p)] for role in sweep_roles(runs_table([str(p)]))})
        _check_runs(src, [str(p)])
        return src
    return Source(p, "empty", problems=[f"{p}: no study.json and no run folders (result.json / config.yaml): "
                                        "run a sweep (python -m lab.sweep) or a study (python -m lab.study) into it"])


def sweep_roles(runs: pd.DataFrame) -> list[str]:
    """Which analyses a plain sweep supports: a mixture sweep when it trained several mixtures, a batch
    x LR grid when a size and budget have several (batch, LR) settings, else a loss-law ladder."""
    ok = runs[runs["status"].isin(OK)] if "status" in runs else runs
    roles = []
    mix_cols = [c for c in ok.columns if c.startswith("mixture.")]
    if mix_cols and len(ok.drop_duplicates(mix_cols)) > 2:
        roles.append("mixture")
    if {"params", "flops", "lr", "batch_tokens"} <= set(ok.columns) and len(ok):
        per_cell = ok.groupby(["params", "flops"])[["lr", "batch_tokens"]].nunique()
        if (per_cell.max(axis=1) > 1).any():
            roles.append("hparams")
    # a loss law across off-optimal LRs or across mixtures would mix effects: a ladder is the rest
    return roles or ["loss"]


def _json(path: Path, problems: list[str]) -> Any:
    """A JSON file's content, or None with the reason in ``problems`` (a damaged file is said, not raised)."""
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        problems.append(f"{path}: unreadable ({type(e).__name__}: {e}); left out")
        return None


def here(study: Path, recorded: str | None) -> Path | None:
    """A path ``study.json`` recorded, or the same name inside the study folder when the study was
    moved (copied from a cluster, say): study paths are absolute."""
    if not recorded:
        return None
    p = Path(recorded)
    if p.exists():
        return p
    for k in range(1, min(4, len(p.parts))):
        cand = study.joinpath(*p.parts[-k:])
        if cand.exists():
            return cand
    return None


def _stage_sweeps(src: Source, role: str) -> list[str]:
    """The stage's sweeps; a stage that failed mid-way records only the sweeps it ran (``sweeps_run``)."""
    st = src.stage(role)
    recorded = list(st.get("sweeps") or []) or [r.get("sweep_dir") for r in st.get("sweeps_run") or []]
    found = [here(src.path, d) for d in recorded]
    for d, f in zip(recorded, found):
        if f is None:
            src.problems.append(f"stage {role}: recorded sweep {d} not found (nor under {src.path})")
    return [str(f) for f in found if f is not None and f.is_dir()]


def _open_study(p: Path) -> Source:
    problems: list[str] = []
    doc = _json(p / "study.json", problems)
    if not isinstance(doc, dict):
        return Source(p, "empty", problems=problems or [f"{p / 'study.json'}: not a study record"])
    src = Source(p, "study", study=doc, problems=problems)
    if (p / "summary.json").is_file():
        src.summary = _json(p / "summary.json", src.problems)
    for role in ROLES:
        dirs = _stage_sweeps(src, role)
        state = _stage_state(src.stage(role))
        if dirs:
            src.sweeps[role] = dirs
            if not state.startswith("done"):
                src.problems.append(f"stage {role}: {state}: showing the runs it finished")
        else:
            src.problems.append(f"stage {role}: {state}: no sweep to show")
    rec = here(p, src.stage("recipe").get("recipe"))
    if rec is not None and rec.is_file():
        src.recipe = rec
    else:
        src.problems.append(f"stage recipe: {_stage_state(src.stage('recipe'))}: no recipe")
    for seed, run in (src.stage("full").get("runs") or {}).items():
        bt = (here(p, run) or Path(run)) / "backtest.json"
        if bt.is_file():
            got = _json(bt, src.problems)
            if isinstance(got, dict):
                src.backtests[str(seed)] = got
    if not src.backtests:
        src.problems.append(f"stage full/backtest: {_stage_state(src.stage('backtest'))}: no back-test")
    _check_runs(src, sorted({d for ds in src.sweeps.values() for d in ds}))
    return src


def _open_demo(p: Path) -> Source:
    """``python -m lab.demo``'s folder: ``sweep/`` (the ladder), ``recipe.yaml``, ``full/`` (its run)."""
    sweep = str(p / "sweep")
    src = Source(p, "demo", sweeps={"loss": [sweep]}, recipe=p / "recipe.yaml")
    bt = p / "full" / "backtest.json"
    if bt.is_file() and isinstance(got := _json(bt, src.problems), dict):
        src.backtests["0"] = got
    elif not bt.is_file():
        src.problems.append(f"{p / 'full'}: no backtest.json: the full-size run has not finished")
    _check_runs(src, [sweep])
    return src


def _stage_state(st: dict[str, Any]) -> str:
    status = st.get("status") or "not run"
    return f"{status} ({st['error']})" if st.get("error") else status


def _check_runs(src: Source, dirs: list[str]) -> None:
    """Say how many runs failed or are unfinished (they are left out of every fit)."""
    for d in dirs:
        runs = runs_table([d])
        if not len(runs):
            src.problems.append(f"{d}: no runs")
            continue
        runs = run_rows(runs)
        bad = runs[~runs["status"].isin(OK)]
        if len(bad):
            counts = ", ".join(f"{n} {s}" for s, n in bad["status"].value_counts().items())
            src.problems.append(f"{d}: {len(bad)} of {len(runs)} runs not completed ({counts}); "
                                "fits use the completed ones")


def provenance(dirs: list[str]) -> pd.DataFrame:
    """Per run: sweep, run, status, N, D, C, loss and the error of a failed run (the report's table)."""
    runs = runs_table(dirs)
    runs = run_rows(runs)
    cols = [c for c in ("sweep", "run", "status", "params", "tokens", "flops", "lr", "batch_tokens", "loss_val",
                        "error") if c in runs.columns]
    return runs[cols] if len(runs) else runs
