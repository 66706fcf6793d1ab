"""Fit inputs: any table with N, D, C and loss columns -> validated arrays, with every choice stated.

A fit reads a sweep folder (through :mod:`lab.results`) or a CSV/Parquet table. Column names are
the user's choice; by default the lab's own (``params``, ``tokens``, ``flops``, ``loss_val``), with
common aliases for foreign tables. When D is missing it is derived as ``D = C / (6 N)`` and when C is
missing as ``C = 6 N D``; the :class:`Points` say so in ``notes`` and in their ``convention``.

Rows are never dropped silently: runs that did not complete, rows with NaN in a used column and rows
the caller excludes are listed in ``dropped`` with the reason. Non-positive values cannot be fitted in
log space and raise a :class:`FitError` naming the column and the offending rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.fit.engine.errors import FitError

# Aliases tried, in order, when the user names no column.
ALIASES = {
    "N": ["params", "N", "n", "params_N", "Model Size", "model_size", "non_embedding_params"],
    "D": ["tokens", "D", "t", "tokens_D", "Training Tokens", "train_tokens"],
    "C": ["flops", "C", "Training FLOP", "training_flops", "compute"],
    "loss": ["loss_val", "loss", "val_loss", "Loss"],
}

# How the lab's own columns are defined (lab.counting), for outputs that must name the convention.
LAB_CONVENTIONS = {
    "params": "N = non-embedding parameters (lab.counting: excludes token embedding and output head)",
    "params_total": "N = all parameters, embeddings included (Chinchilla's convention)",
    "flops": "C = D * (6 N + 6 d V + 6 L seq d): head and causal attention counted (lab.counting.flops_per_token)",
    "flops_6nd": "C = 6 N D (Kaplan's convention, non-embedding N)",
    "tokens": "D = training tokens",
    "loss_val": "loss = validation loss, nats/token",
}
LAB_OK_STATUS = ("completed", "ok")


@dataclass
class Points:
    """Validated fit input: arrays aligned row by row, plus what was chosen and dropped."""

    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    ids: list[str]
    columns: dict[str, str]
    convention: dict[str, str]
    budget: np.ndarray | None = None       # design budget per row when the table has one
    run: np.ndarray | None = None          # run key per row (groups a run's curve points)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.loss)

    def subset(self, mask: np.ndarray, reason: str | None = None) -> "Points":
        """Rows where ``mask``; the rest recorded in ``dropped`` with ``reason`` (if given)."""
        mask = np.asarray(mask, bool)
        dropped = list(self.dropped)
        if reason:
            dropped += [{"id": i, "reason": reason} for i, m in zip(self.ids, mask) if not m]
        take = lambda a: None if a is None else a[mask]  # noqa: E731
        return Points(self.N[mask], self.D[mask], self.C[mask], self.loss[mask],
                      [i for i, m in zip(self.ids, mask) if m], dict(self.columns), dict(self.convention),
                      take(self.budget), take(self.run), dropped, list(self.notes), self.source)

    def X(self) -> dict[str, np.ndarray]:
        return {"lnN": np.log(self.N), "lnD": np.log(self.D), "lnC": np.log(self.C)}


def read_table(source: str | os.PathLike | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """A DataFrame from a sweep folder (runs table), a .csv/.parquet file, or a DataFrame as is."""
    if isinstance(source, pd.DataFrame):
        return source, "<DataFrame>"
    path = Path(source)
    if not path.exists():
        raise FitError(f"INPUT {str(path)!r} does not exist: give a sweep folder or a .csv/.parquet table")
    if path.is_dir():
        from lab.results import load_runs  # the lab's tables; lazy so plain CSV fits need nothing more
        df = load_runs(path)
        if df.empty:
            raise FitError(f"INPUT {str(path)!r} holds no run records (no result.json below it)")
        return df, str(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path), str(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path), str(path)
    raise FitError(f"INPUT {str(path)!r}: unknown table format {suffix!r}; allowed: a folder, .csv, .parquet")


def _pick(df: pd.DataFrame, role: str, given: str | None) -> str | None:
    if given is not None:
        if given not in df.columns:
            raise FitError(f"--{role} column {given!r} is not in the table; columns: {', '.join(map(str, df.columns))}")
        return given
    for name in ALIASES[role]:
        if name in df.columns:
            return name
    return None


ONE_SETTING = ("tokenizer", "vocab_size", "seq_len", "corpus")  # a loss law compares runs of one of each


def require_one_setting(df: pd.DataFrame, where: str, what: str = "a loss law", mixture: bool = True) -> None:
    """One tokenizer, vocabulary, context length, corpus (and, with ``mixture``, mixture) per fit:
    nats/token of different tokenizers or data are different units, so one law cannot span them."""
    for col in ONE_SETTING:
        if col in df.columns and df[col].dropna().nunique() > 1:
            vals = sorted(map(str, df[col].dropna().unique()))[:4]
            raise FitError(f"{where}: the runs mix {col} values ({', '.join(vals)}); {what} is fitted to runs of "
                           f"one {col}: fit each group apart (filter the table) or sweep one setting")
    mix = [c for c in df.columns if c.startswith("mix_")] if mixture else []
    if mix and len(df[mix].round(4).drop_duplicates()) > 1:
        raise FitError(f"{where}: the runs were trained on {len(df[mix].round(4).drop_duplicates())} different "
                       f"mixtures; {what} is fitted at one mixture (the mixing law, lab.fit mixing, fits across "
                       "mixtures)")


def _status_counts(df: pd.DataFrame) -> str:
    counts = df["status"].astype(str).value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def load_points(source: str | os.PathLike | pd.DataFrame, N: str | None = None, D: str | None = None,
                C: str | None = None, loss: str | None = None, cooldowns: bool = False) -> Points:
    """Read and validate a table for fitting.

    ``cooldowns``: keep the lab's WSD cooldown-branch rows (each is a finished schedule at a
    smaller D); by default a run counts once, at its end.
    """
    df, where = read_table(source)
    cols = {role: _pick(df, role, given) for role, given in (("N", N), ("D", D), ("C", C), ("loss", loss))}
    if cols["loss"] is None:
        if "status" in df.columns and not df["status"].astype(str).isin(LAB_OK_STATUS).any():
            raise FitError(f"no point to fit in {where}: none of its {len(df)} runs completed "
                           f"({_status_counts(df)}); see each run's error in `python -m lab.results`")
        raise FitError(f"no loss column: pass --loss COL (tried {', '.join(ALIASES['loss'])})")
    if cols["N"] is None:
        raise FitError(f"no N column: pass --N COL (tried {', '.join(ALIASES['N'])})")
    if cols["D"] is None and cols["C"] is None:
        raise FitError("neither a D nor a C column: pass --D COL or --C COL "
                       f"(tried {', '.join(ALIASES['D'])} / {', '.join(ALIASES['C'])})")
    ids = (df["sweep"].astype(str) + "/" + df["run"].astype(str)).tolist() if {"sweep", "run"} <= set(df.columns) \
        else [f"row {i}" for i in range(len(df))]
    dropped: list[dict[str, Any]] = []
    keep = np.ones(len(df), bool)
    if "cooldown" in df.columns and not cooldowns:
        cd = df["cooldown"].fillna(False).astype(bool).to_numpy()
        if cd.any():
            ids = [i + (" (cooldown)" if c else "") for i, c in zip(ids, cd)]
        keep &= ~cd  # cooldown rows are extra points of a run, not runs: not "dropped"
    if "status" in df.columns:
        st = df["status"].astype(str).to_numpy()
        bad = keep & ~np.isin(st, LAB_OK_STATUS)
        dropped += [{"id": ids[i], "reason": f"status={st[i]}"} for i in np.flatnonzero(bad)]
        keep &= ~bad
    used = [c for c in cols.values() if c is not None]
    for c in used:
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        nan = keep & ~np.isfinite(vals)
        dropped += [{"id": ids[i], "reason": f"{c} is NaN or not a number"} for i in np.flatnonzero(nan)]
        keep &= ~nan
    for c in used:
        vals = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        nonpos = keep & (vals <= 0)
        if nonpos.any():
            rows = ", ".join(ids[i] for i in np.flatnonzero(nonpos)[:5])
            raise FitError(f"column {c!r} has {int(nonpos.sum())} non-positive value(s) ({rows}); "
                           "laws are fitted in log space, so N, D, C and loss must be > 0")
    require_one_setting(df[keep], where)
    if not keep.any():
        reasons: dict[str, int] = {}
        for d_ in dropped:
            reasons[d_["reason"]] = reasons.get(d_["reason"], 0) + 1
        said = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "no rows"
        raise FitError(f"no point left to fit in {where}: all {len(df)} rows were dropped ({said})")
    sub = df[keep]
    num = lambda c: pd.to_numeric(sub[c], errors="coerce").to_numpy(float)  # noqa: E731
    n, l = num(cols["N"]), num(cols["loss"])
    notes: list[str] = []
    convention = {"N": LAB_CONVENTIONS.get(cols["N"], f"N = column {cols['N']!r} as given"),
                  "loss": LAB_CONVENTIONS.get(cols["loss"], f"loss = column {cols['loss']!r} as given")}
    if cols["D"] is None:
        c = num(cols["C"])
        d = c / (6.0 * n)
        notes.append(f"D derived as C / (6 N) from {cols['C']!r} and {cols['N']!r} (no D column given)")
        convention["D"] = "D = C / (6 N) (derived)"
        convention["C"] = LAB_CONVENTIONS.get(cols["C"], f"C = column {cols['C']!r} as given")
    elif cols["C"] is None:
        d = num(cols["D"])
        c = 6.0 * n * d
        notes.append(f"C derived as 6 N D from {cols['N']!r} and {cols['D']!r} (no C column given)")
        convention["D"] = LAB_CONVENTIONS.get(cols["D"], f"D = column {cols['D']!r} as given")
        convention["C"] = "C = 6 N D (derived)"
    else:
        d, c = num(cols["D"]), num(cols["C"])
        convention["D"] = LAB_CONVENTIONS.get(cols["D"], f"D = column {cols['D']!r} as given")
        convention["C"] = LAB_CONVENTIONS.get(cols["C"], f"C = column {cols['C']!r} as given")
    budget = None
    for bcol in ("budget", "design.budget"):
        if bcol in sub.columns:
            b = pd.to_numeric(sub[bcol], errors="coerce").to_numpy(float)
            if np.all(np.isfinite(b)):
                budget = b
                break
    run = (sub["sweep"].astype(str) + "/" + sub["run"].astype(str)).to_numpy() if {"sweep", "run"} <= set(sub.columns) \
        else None
    kept_ids = [i for i, k in zip(ids, keep) if k]
    if dropped:
        notes.append(f"{len(dropped)} row(s) not used: " + "; ".join(f"{d['id']}: {d['reason']}" for d in dropped[:8])
                     + (" ..." if len(dropped) > 8 else ""))
    return Points(n, d, c, l, kept_ids, {k: v for k, v in cols.items() if v is not None}, convention,
                  budget, run, dropped, notes, where)


def group_budgets(C: np.ndarray, budget: np.ndarray | None = None, rel_tol: float = 0.1) -> np.ndarray:
    """Integer group per row: the design budget when known, else clusters of C within ``rel_tol``.

    Points of one IsoFLOP profile rarely spend exactly the same C (a whole number of steps, or
    values read off a figure), so nearby C values (sorted, gaps under ``rel_tol`` in log) join one
    group.
    """
    key = np.log(budget if budget is not None else C)
    order = np.argsort(key)
    groups = np.empty(len(C), int)
    g, prev = 0, None
    for i in order:
        if prev is not None and key[i] - prev > np.log1p(rel_tol):
            g += 1
        groups[i] = g
        prev = key[i]
    return groups
