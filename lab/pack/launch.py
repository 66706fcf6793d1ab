"""A sweep's packs: planned by the sweep's driver, trained by each pack's first job.

The driver (:mod:`lab.sweep`) plans every job before launch, so it knows which runs share a shape.
:func:`plan_packs` groups them (:func:`lab.pack.grouping.group_runs`: same pack key and micro-batch, so a
member computes the same bits as its solo run; within a memory bound; at least one pack per worker
where it can) and :func:`write_packs` leaves the plan in ``<sweep dir>/packs.json`` before any job
starts. Hydra expands the sweep's grid as always (run folders are named by their overrides), and the
sweeper (:class:`lab.sweep.PackingSweeper`) launches the first member of each pack and the runs that
train alone, not the other members (:func:`pack_followers`); each job looks itself up (:func:`role`)
and the first member of a pack trains the whole pack (:func:`lab.pack.train.train_pack`) into the
members' own folders. A member whose job is launched anyway (another sweeper) returns at once. A relaunch plans again over the runs not yet completed, and every member resumes from its own
checkpoint, whichever pack it lands in.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from lab.config import RunConfig, SweepConfig, to_run_config
from lab.counting import Shape, counts
from lab.io import atomic_write_json, read_json
from lab.pack.grouping import Item, group_runs, max_members, pack_key

PACKS_FILE = "packs.json"
LOCAL_MEMORY_SHARE = 0.5  # of the machine's memory, split between the local workers
SLURM_MEMORY_SHARE = 0.6  # of a job's mem_gb (the rest: the interpreter, torch, the corpus)


def memory_budget(local: bool, workers: int, mem_gb: float | None) -> float:
    """Bytes one pack's activations and states may take: a share of the machine's memory per local
    worker, or of the Slurm job's ``mem_gb``."""
    if not local and mem_gb:
        return SLURM_MEMORY_SHARE * float(mem_gb) * 1024**3
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        total = 8 * 1024**3
    return LOCAL_MEMORY_SHARE * total / max(1, workers)


def plan_packs(jobs: Sequence[tuple[str, RunConfig, Shape, float]], workers: int, budget: float) -> list[list[str]]:
    """Packs of job names from ``(name, run config, shape, FLOPs)``: runs of one pack key and one
    micro-batch together, each pack within ``budget``, at least ``workers`` packs where possible."""
    items = []
    for name, cfg, shape, flops in jobs:
        micro = cfg.train.micro_batch or cfg.train.batch_tokens // cfg.data.seq_len
        key = pack_key(cfg, shape)
        items.append(Item(name, None if key is None else (key, micro), flops, max_members(shape, counts(shape)["params_total"], budget, micro)))
    return group_runs(items, workers)


def write_packs(sweep_dir: Path, packs: list[list[str]], configs: dict[str, RunConfig], budget: float) -> None:
    """``packs.json``: each pack of two or more runs, with each member's resolved config (the first
    member's job trains them all)."""
    doc = {"budget_bytes": budget, "packs": [
        [{"name": n, "config": {**asdict(configs[n]), "run_dir": None}} for n in p] for p in packs if len(p) > 1]}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep_dir / PACKS_FILE, doc)


def clear_packs(sweep_dir: Path) -> None:
    """No packing for this launch (``--no-pack``): every job trains its own run."""
    (sweep_dir / PACKS_FILE).unlink(missing_ok=True)


def role(sweep_dir: Path, name: str) -> tuple[str, dict[str, Any] | None]:
    """("solo", None), ("leader", pack) or ("follower", pack) for the job whose run folder is ``name``."""
    try:
        doc = read_json(sweep_dir / PACKS_FILE)
    except (OSError, ValueError):
        return "solo", None
    for members in doc.get("packs", []):
        names = [m["name"] for m in members]
        if name in names:
            pack = {"members": members, "budget_bytes": float(doc.get("budget_bytes") or 0)}
            return ("leader" if names[0] == name else "follower"), pack
    return "solo", None


def pack_followers(sweep_dir: Path) -> set[str]:
    """Run folder names that a pack's first job trains (every member but the first)."""
    try:
        doc = read_json(sweep_dir / PACKS_FILE)
    except (OSError, ValueError):
        return set()
    return {m["name"] for members in doc.get("packs", []) for m in members[1:]}


def pack_configs(sweep_dir: Path, pack: dict[str, Any]) -> list[RunConfig]:
    """The members' run configs, each training into its own folder of the sweep."""
    out = []
    for m in pack["members"]:
        cfg = to_run_config(dict(m["config"]), SweepConfig)
        cfg.run_dir = str(sweep_dir / m["name"])
        out.append(cfg)
    return out
