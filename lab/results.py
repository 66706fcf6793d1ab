"""Run records -> tidy pandas tables -> Parquet. Analysis reads these tables, never logs.

``python -m lab.results SWEEP_DIR... [--out FILE.parquet|.csv] [--curves FILE] [--quiet]``

Every run folder (anything holding a ``result.json`` or a ``config.yaml`` written by
:mod:`lab.train`) becomes

* one row of the **runs** table: ``sweep``, ``run``, ``status``, ``error``, the flattened config
  (``model.depth``, ``train.lr``, ...), the symbols of :mod:`lab.counting` (``params``,
  ``params_total``, ``tokens``, ``flops``, ``batch_tokens``, ``lr``), ``schedule``, the mixture as
  ``mix_<domain>``, final losses ``loss_train``, ``loss_val``, ``bpb_val`` and per domain
  ``loss_val_<domain>`` / ``bpb_val_<domain>``, ``wall_s``, ``tokens_per_s``, and any ``tags``;
* one more row per WSD cooldown branch (``cooldown`` True: tokens, flops and losses at the branch's
  end; ``branch_flops`` its extra compute), beside the run's final row (``cooldown`` False);
* rows of the long **curves** table: ``sweep``, ``run``, ``step``, ``tokens``, ``flops``,
  ``loss``, ``lr`` and, at evaluation steps, ``loss_val`` and ``loss_val_<domain>``.

Runs without a ``result.json`` are listed with status ``incomplete`` (running, killed, or not
started), never dropped. A run whose ``result.json`` or ``config.yaml`` cannot be read is listed with
status ``corrupt`` and the file and reason in ``error``; the rest of the sweep is used. Lines of
``metrics.jsonl`` that are not JSON (other than a last line still being written) are skipped and
counted in ``metrics_bad_lines``. Reading never writes: when the sweep folder is read-only (a
colleague's, on a shared file system) the cache is skipped. Collection is incremental and safe under concurrent writers: each run's
rows are cached in ``<sweep>/.lab/`` keyed by the size and mtime of its files; runs write their own
files atomically, and the cache is replaced atomically under a lock, so a reader never sees a
half-written table and a run finishing mid-collection is picked up on the next call.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from lab.io import atomic_write_bytes, first_line, jsonl_rows, locked

CACHE_DIR = ".lab"
RUN_FILES = ("result.json", "config.yaml", "metrics.jsonl")
FIRST_COLUMNS = [
    "sweep", "run", "cooldown", "status", "params", "params_total", "tokens", "flops", "batch_tokens", "lr", "schedule",
    "loss_val", "bpb_val", "loss_train", "wall_s", "tokens_per_s", "error",
]

# libyaml's safe loader where present (the same safe subset, ~10x faster on many run folders)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Tables:
    runs: pd.DataFrame
    curves: pd.DataFrame


def find_runs(sweep_dir: Path) -> list[Path]:
    """Run folders under ``sweep_dir`` (itself included), sorted; hidden folders are skipped."""
    found = set()
    for name in ("result.json", "config.yaml"):
        for p in sweep_dir.rglob(name):
            rel = p.relative_to(sweep_dir).parts
            if any(part.startswith(".") for part in rel[:-1]):
                continue  # .hydra/config.yaml, .lab/, .submitit/
            if name == "config.yaml" and p.parent not in found and not _is_lab_config(p):
                continue
            found.add(p.parent)
    return sorted(found)


def _is_lab_config(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=SAFE_LOADER)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and "config" in doc and "derived" in doc


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not key.endswith(("mixture", "val_weights")):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (dict, list)):
            out[key] = json.dumps(v, sort_keys=True)  # keep one scalar cell (Parquet-friendly)
        else:
            out[key] = v
    return out


def read_run(run_dir: Path, sweep: str, run: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One run folder -> (runs-table rows, curve rows).

    The first row is the run's final point (``cooldown`` False); a WSD run with cooldown branches
    adds one row per branch (``cooldown`` True) whose tokens, flops and losses are the branch's.
    """
    row: dict[str, Any] = {"sweep": sweep, "run": run, "cooldown": False}
    branches: list[dict[str, Any]] = []
    cfg_path, res_path, met_path = (run_dir / n for n in ("config.yaml", "result.json", "metrics.jsonl"))
    damage = []
    if cfg_path.exists():
        try:
            with open(cfg_path, encoding="utf-8") as f:
                doc = yaml.load(f, Loader=SAFE_LOADER) or {}
            row.update(_flatten(doc.get("config", {}) if isinstance(doc, dict) else {}))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            damage.append(f"{cfg_path}: unreadable ({type(e).__name__}: {first_line(e)})")
    res = _read_record(res_path, damage) if res_path.exists() else None
    if res is not None:
        if "config" in res and "model.depth" not in row:  # failed before config.yaml was written
            row.update(_flatten(res["config"]))
        for k, v in res.items():
            if k in ("config", "traceback"):
                continue
            if k == "cooldowns":
                branches = list(v or [])
                continue
            if k == "mixture":
                row.update({f"mix_{d}": s for d, s in v.items()})
            elif k == "val_weights":
                row.update({f"valw_{d}": s for d, s in v.items()})
            elif k == "loss_val_domains":
                row.update({f"loss_val_{d}": s for d, s in v.items()})
            elif k == "bpb_val_domains":
                row.update({f"bpb_val_{d}": s for d, s in v.items()})
            elif k == "tags":
                row.update({str(t): tv for t, tv in (v or {}).items()})
            elif k == "param_groups":
                row.update({f"params_{g}": n for g, n in v.items()})
            elif isinstance(v, (dict, list)):
                row[k] = json.dumps(v, sort_keys=True)
            else:
                row[k] = v
    elif not res_path.exists():
        row["status"] = "incomplete"
    if damage:  # a damaged record is listed, with the file and what to do, never hidden or fatal
        row["status"], row["error"] = "corrupt", "; ".join(damage) + " (rerun the run, or delete the folder)"
    curves, bad = _read_curves(met_path, sweep, run) if met_path.exists() else ([], 0)
    if bad:
        row["metrics_bad_lines"] = bad
    rows = [row]
    for b in branches:
        # a branch is its own (D, C) point: the run's losses and its budget tags do not apply to it
        branch = {k: v for k, v in row.items() if not k.startswith(("loss_val", "bpb_val", "loss_train"))
                  and k not in BUDGET_KEYS}
        branch.update({"cooldown": True, "steps": b["step"], "tokens": b["tokens"], "flops": b["flops"],
                       "branch_flops": b["branch_flops"]})
        branch.update({k: v for k, v in b.items() if k.startswith(("loss_val", "bpb_val"))})
        rows.append(branch)
    return rows, curves


BUDGET_KEYS = ("budget", "tags.budget", "design.budget")


def _read_record(path: Path, damage: list[str]) -> dict[str, Any] | None:
    """``result.json`` as a dict, or None with the reason appended to ``damage``."""
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        damage.append(f"{path}: not a readable JSON record ({type(e).__name__}: {first_line(e)})")
        return None
    if not isinstance(res, dict):
        damage.append(f"{path}: not a JSON object")
        return None
    return res


def _read_curves(path: Path, sweep: str, run: str) -> tuple[list[dict[str, Any]], int]:
    """Curve rows of ``metrics.jsonl`` and the number of garbage lines skipped.

    A last line without its newline is being written right now (or was torn by a kill): it is
    skipped silently and picked up next time. Any other line that is not a JSON object counts.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [], 1
    complete = text[: text.rfind("\n") + 1]  # the last line, when it has no newline yet, is being written
    curves, bad = [], 0
    for _, rec in jsonl_rows(complete):
        if rec is None or "step" not in rec:
            bad += 1
            continue
        curves.append({"sweep": sweep, "run": run, **rec})
    return curves, bad


def _fingerprint(run_dir: Path) -> list[int]:
    fp = []
    for name in RUN_FILES:
        try:
            st = (run_dir / name).stat()
            fp += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            fp += [-1, -1]
    return fp


def collect_sweep(sweep_dir: Path, sweep: str | None = None, use_cache: bool = True) -> Tables:
    """Runs and curves of one sweep folder, re-reading only runs whose files changed."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ValueError(f"SWEEP_DIR {str(sweep_dir)!r} is not a folder")
    sweep = sweep or sweep_dir.resolve().name
    cache = sweep_dir / CACHE_DIR
    old_index, old_runs, old_curves = _load_cache(cache) if use_cache else ({}, None, None)
    index, rows, curve_frames = {}, [], []
    fresh_rows, fresh_curves = [], []
    for run_dir in find_runs(sweep_dir):
        run = str(run_dir.relative_to(sweep_dir)) if run_dir != sweep_dir else "."
        fp = _fingerprint(run_dir)
        index[run] = fp
        if old_index.get(run) == fp and old_runs is not None:
            rows.append(old_runs[old_runs["run"] == run])
            if old_curves is not None and len(old_curves):
                curve_frames.append(old_curves[old_curves["run"] == run])
            continue
        run_rows, curves = read_run(run_dir, sweep, run)
        fresh_rows.extend(run_rows)
        fresh_curves.extend(curves)
    if fresh_rows:
        rows.append(pd.DataFrame(fresh_rows))
    if fresh_curves:
        curve_frames.append(pd.DataFrame(fresh_curves))
    runs = _concat(rows)
    curves = _concat(curve_frames)
    if len(runs):
        runs = runs.assign(sweep=sweep)
    if len(curves):
        curves = curves.assign(sweep=sweep)
    if use_cache and (fresh_rows or set(index) != set(old_index)):
        _save_cache(cache, index, runs, curves)
    return Tables(_order(runs), curves)


def collect(paths: Iterable[str | os.PathLike], use_cache: bool = True) -> Tables:
    """Runs and curves tables of one or more sweep folders (a single run folder works too)."""
    parts = [collect_sweep(Path(p), use_cache=use_cache) for p in paths]
    if not parts:
        raise ValueError("give at least one SWEEP_DIR")
    return Tables(_order(_concat([t.runs for t in parts])), _concat([t.curves for t in parts]))


def load_runs(*paths: str | os.PathLike) -> pd.DataFrame:
    """The runs table of the given sweep folders (pandas API shortcut)."""
    return collect(paths).runs


def load_curves(*paths: str | os.PathLike) -> pd.DataFrame:
    """The long curves table of the given sweep folders."""
    return collect(paths).curves


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    if not len(df):
        return df
    first = [c for c in FIRST_COLUMNS if c in df.columns]
    rest = sorted(c for c in df.columns if c not in first)
    keys = [k for k in ("sweep", "run", "tokens") if k in df.columns]
    return df[first + rest].sort_values(keys, kind="stable").reset_index(drop=True)


def _load_cache(cache: Path) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    try:
        index = json.loads((cache / "index.json").read_text())
        runs = pd.read_parquet(cache / "runs.parquet")
        curves = pd.read_parquet(cache / "curves.parquet") if (cache / "curves.parquet").exists() else None
        return index, runs, curves
    except (OSError, ValueError):  # no cache yet, or an unreadable one: rebuild it
        return {}, None, None


def _save_cache(cache: Path, index: dict, runs: pd.DataFrame, curves: pd.DataFrame) -> None:
    """Replace the cache atomically under its lock; skipped when the folder cannot be written (read-only)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with locked(cache / ".lock"):
            atomic_write_bytes(cache / "runs.parquet", _parquet_bytes(runs))
            atomic_write_bytes(cache / "curves.parquet", _parquet_bytes(curves))
            atomic_write_bytes(cache / "index.json", json.dumps(index, sort_keys=True).encode())
    except OSError as e:  # a colleague's read-only sweep: reading never requires writing
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return
        raise


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    _parquet_safe(df).to_parquet(buf, index=False)
    return buf.getvalue()


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    # Mixed-type object columns (e.g. a config value that is None in one run, a number in another)
    # cannot be written to Parquet as is: store them as strings.
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {type(v) for v in df[c] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


def save_table(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write a table atomically as Parquet (``.parquet``) or CSV (``.csv``)."""
    out = Path(out)
    if out.suffix == ".parquet":
        atomic_write_bytes(out, _parquet_bytes(df))
    elif out.suffix == ".csv":
        atomic_write_bytes(out, df.to_csv(index=False).encode())
    else:
        raise ValueError(f"--out: {out.name!r} must end in .parquet or .csv")
    return out


def summary(runs: pd.DataFrame) -> str:
    """A readable summary: counts by status and the completed runs' key numbers."""
    if not len(runs):
        return "no runs found"
    lines = []
    counts = runs["status"].value_counts().to_dict()
    lines.append(f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    cols = [c for c in ("run", "status", "params", "tokens", "flops", "lr", "loss_val", "bpb_val", "wall_s") if c in runs]
    view = runs[cols].copy()
    fmt = {
        "params": "{:,.0f}".format, "tokens": "{:.3g}".format, "flops": "{:.3g}".format, "lr": "{:.2g}".format,
        "loss_val": "{:.4f}".format, "bpb_val": "{:.4f}".format, "wall_s": "{:.0f}".format,
    }
    for c, f in fmt.items():
        if c in view:
            view[c] = view[c].map(lambda v, f=f: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f(v))
    lines.append(view.to_string(index=False))
    failed = runs[runs["status"].isin(["failed", "diverged", "corrupt"])] if "status" in runs else runs.iloc[:0]
    for _, r in failed.iterrows():
        lines.append(f"  {r['run']}: {r['status']}: {r.get('error')}")
    if "metrics_bad_lines" in runs:
        for _, r in runs[runs["metrics_bad_lines"].fillna(0) > 0].iterrows():
            lines.append(f"  {r['run']}: metrics.jsonl has {int(r['metrics_bad_lines'])} line(s) that are not JSON "
                         "rows; skipped in the curves table")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR")
    ap.add_argument("--out", help="write the runs table here (.parquet or .csv)")
    ap.add_argument("--curves", help="write the curves table here (.parquet or .csv)")
    ap.add_argument("--no-cache", action="store_true", help="re-read every run (ignore <sweep>/.lab)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        t = collect(args.sweeps, use_cache=not args.no_cache)
        if not args.quiet:
            print(summary(t.runs))
        for table, out in ((t.runs, args.out), (t.curves, args.curves)):
            if out:
                print(f"wrote {save_table(table, out)} ({len(table)} rows)")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
