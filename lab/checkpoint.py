"""Checkpoints and the run folder's line files: written atomically, read back to resume.

A checkpoint holds the model, the optimizer and the loop's accumulators (``state``), unsharded,
keyed by parameter name, so a run resumes bit for bit under any number of processes. JSONL files
(``metrics.jsonl``, ``cooldowns.jsonl``) are cut back to the checkpoint on resume, since the
steps after it run again.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from lab.io import atomic_write_bytes, atomic_write_text, first_line, jsonl_rows


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written; the message names the file and what to do."""


class UnreadableCheckpoint(Exception):
    """A checkpoint that cannot be loaded safely (truncated, empty, or holding code)."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save``, atomically: a reader never sees half a file, and a failed
    write (a full disk) leaves the previous checkpoint as it was."""
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint "
                              "is intact: free space (or fix the folder) and rerun the same command to resume") from e


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` on CPU, or None when there is none.

    Loads with torch's safe loader (``weights_only=True``: tensors, plain containers and numbers,
    nothing that runs code). Raises :class:`UnreadableCheckpoint` naming the file when it is
    truncated, empty, not a checkpoint, or holds anything else; an OSError (the file could not be
    read) propagates.
    """
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        # not OSError: a read error of a shared file system (EIO, ESTALE) is not a bad file; it fails the
        # attempt (recorded) and the rerun resumes
        raise UnreadableCheckpoint(f"{path}: {type(e).__name__}: {first_line(e, 160)}")
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "state"} <= set(ckpt):
        raise UnreadableCheckpoint(f"{path}: not a lab checkpoint (no model/optimizer/state)")
    return ckpt


def set_aside(path: Path) -> Path:
    """Rename an unreadable checkpoint out of the way (kept for inspection); return the new path."""
    dest = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, dest)
    return dest


def truncate_jsonl(path: Path, last_step: int, key: str = "step") -> int:
    """Keep JSONL rows whose ``key`` is <= ``last_step`` (later ones will be written again).

    Lines that are not JSON objects with ``key`` (a line torn by a kill mid-write, garbage) are
    dropped; returns how many.
    """
    if not path.exists():
        return 0
    keep, bad = [], 0
    for ln, row in jsonl_rows(path.read_text(encoding="utf-8", errors="replace")):
        if row is None or not isinstance(row.get(key), (int, float)):
            bad += 1
        elif row[key] <= last_step:
            keep.append(ln)
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
    return bad


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON-object row of a JSONL file (other lines skipped); [] when the file does not exist."""
    if not path.exists():
        return []
    # torn or garbage lines are skipped here; truncate_jsonl drops them on resume
    return [row for _, row in jsonl_rows(path.read_text(encoding="utf-8", errors="replace")) if row is not None]


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> tuple[dict, dict]:
    """Unsharded model and optimizer state (gathered to CPU under FSDP; every rank must call it)."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: dict, fsdp: bool) -> None:
    """Load a checkpoint's unsharded model and optimizer state (scattered to shards under FSDP)."""
    if not fsdp:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
