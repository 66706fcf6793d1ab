"""Checkpoints and the run folder's line files: written atomically, read back to resume.

A checkpoint holds the model, the optimizer and the loop's accumulators (``state``), unsharded,
keyed by parameter name, so a run resumes bit for bit under any number of processes. JSONL files
(``metrics.jsonl``, ``cooldowns.jsonl``) are cut back to the checkpoint on resume, since the
steps after it run again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from lab.io import atomic_write_bytes, atomic_write_text


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save``, atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` on CPU, or None when there is none."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def truncate_jsonl(path: Path, last_step: int, key: str = "step") -> None:
    """Keep JSONL rows whose ``key`` is <= ``last_step`` (later ones will be written again)."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)[key] <= last_step]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def read_jsonl(path: Path) -> list[dict]:
    """Every row of a JSONL file; [] when the file does not exist."""
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


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
