"""Where a run executes: device and precision, threads, the process group, model wrapping, allocator.

Nothing here knows a training loop or a corpus. The trainer and the benchmark call these
explicitly, so the process-wide settings (threads, glibc's allocator) are visible where they are made.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

_MALLOC_TUNED = False


def keep_freed_memory() -> None:
    """Stop glibc from handing big freed blocks back to the OS between training steps.

    By default every allocation >= 32 MiB (and smaller ones once the heap top is trimmed) is a
    fresh ``mmap``, so each step page-faults its large activations in again; in a VM/sandbox a
    fault is expensive (measured here: a 32 MiB elementwise op takes 39 ms on fresh pages, 8 ms on
    reused ones, and small 2-thread runs went from erratic to stable). Raising the mmap and trim
    thresholds makes freed blocks reusable. Process-wide, glibc only, applied once; the process
    keeps its peak footprint instead of returning it to the OS.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, ctypes.c_int(1 << 30))  # M_MMAP_THRESHOLD: 1 GiB
        libc.mallopt(-1, ctypes.c_int(2**31 - 1))  # M_TRIM_THRESHOLD: effectively never trim
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def pick_device(name: str) -> torch.device:
    """``train.device`` as a torch device; ``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: 'cuda' requested but no CUDA device is available; allowed: auto, cpu")
    return torch.device(name)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU by default; CPU stays fp32 unless asked."""
    if name == "bfloat16" or (name == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context for ``dtype`` (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPU); return this rank's device."""
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", world()[2])
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


@dataclass
class Parallel:
    """How the step reaches the model: ``fwd`` is called, ``no_sync`` defers gradient reduction."""

    fwd: torch.nn.Module
    no_sync: Callable[[], Any] | None
    fsdp: bool


def shard(model: torch.nn.Module, processes: int, parallel: str) -> bool:
    """Shard every block and the rest with FSDP2 when asked under torchrun; True when sharded.

    Call before the optimizer is built: it must see the sharded parameters.
    """
    if processes <= 1 or parallel != "fsdp":
        return False
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return True


def wrap(model: torch.nn.Module, device: torch.device, processes: int, fsdp: bool, use_compile: bool) -> Parallel:
    """The callable the step runs: the (compiled) model, FSDP-sharded model or DDP wrapper."""
    if fsdp:
        return Parallel(torch.compile(model) if use_compile else model, lambda: fsdp_no_sync(model), True)
    if processes > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        return Parallel(torch.compile(ddp) if use_compile else ddp, ddp.no_sync, False)
    return Parallel(torch.compile(model) if use_compile else model, None, False)


@contextlib.contextmanager
def fsdp_no_sync(model: torch.nn.Module):
    """FSDP2's counterpart of DDP.no_sync: keep gradients local until the last micro-batch."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
