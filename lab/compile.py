"""When ``torch.compile`` pays for itself, and one compile cache for everything a sweep or study trains.

``train.compile=auto`` decides from the plan, never from timings, so a resumed run (or a pack's
members, or two processes of one sweep) decide alike:

* on a GPU: always on (compiled steps are several times faster there; compiling takes seconds);
* on a CPU: on when the run's (or the pack's) training compute is large enough that the compiled
  step's gain repays the compilation: ``eager_s * (1 - 1 / CPU_GAIN) > compile_s``, with ``eager_s``
  its FLOPs at :data:`CPU_RATE` per thread, and ``compile_s`` :data:`COLD_S` for a shape not yet
  compiled into the cache, :data:`WARM_S` for one that was.

A sweep (and a study) gives all its runs one inductor/FX-graph cache (:func:`use_cache`), so a shape
is compiled cold once and every later run or pack of that shape loads it warm. :func:`mark_compiled`
leaves a marker per shape in the cache, which is how :func:`warm` knows.

Measured on 2 CPU cores (fp32, 1 thread per run, seq 256, the lab's CPU kernels in place):
compiled/eager step 1.02x at 107k-1.8M params (``lab.bench --quick --impl lab lab+compile``, 2
workers) and 1.00-1.03x at the study's 512-token batches (1.17x at 27k). It was 1.05-1.08x, and
1.12-1.21x at 512-token batches, while eager steps still paid the kernels' custom-op dispatch;
the kernels already fuse most elementwise work. Compiling the step takes 17.5 s cold, 3.4 s warm
(107k params, 2 layers). So on CPU ``auto`` compiles only runs or packs of about 25 eager minutes
or more.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from lab.counting import Shape

CPU_GAIN = 1.02  # compiled / eager step on CPU at the proxies' shapes (1.00-1.03 measured at 107k-1.8M)
CPU_RATE = 40e9  # eager training FLOP/s per thread at the proxies' shapes (37-72 measured; the low end)
COLD_S = 30.0  # compiling a shape's step with an empty cache (17.5 s measured at 2 layers; deeper is longer)
WARM_S = 6.0  # the same from a warm cache (3.4 s measured)
CACHE_ENV = "LAB_COMPILE_CACHE"  # set by a sweep or study: the cache every run it starts shares


@dataclass(frozen=True)
class CompileDecision:
    """Whether a run compiles its step, what it costs (seconds, estimated) and why."""

    on: bool
    cost_s: float
    reason: str


def decide(mode: str, device_type: str, flops: float, threads: int, warm_cache: bool) -> CompileDecision:
    """``train.compile`` (``auto``, ``on``, ``off``) for a run of ``flops`` training FLOPs (a pack: all its
    members') on ``device_type`` with ``threads`` threads; ``warm_cache``: its shape is compiled already."""
    cost = WARM_S if warm_cache else COLD_S
    if mode == "on":
        return CompileDecision(True, cost, "train.compile=on")
    if mode == "off":
        return CompileDecision(False, 0.0, "train.compile=off")
    if device_type == "cuda":
        return CompileDecision(True, cost, "auto: a GPU")
    eager_s = flops / (CPU_RATE * max(1, threads))
    saved = eager_s * (1 - 1 / CPU_GAIN)
    if saved > cost:
        return CompileDecision(True, cost, f"auto: saves ~{saved:.0f} s of ~{eager_s:.0f} s for ~{cost:.0f} s compiling")
    return CompileDecision(False, 0.0, f"auto: ~{eager_s:.0f} s eager; compiling (~{cost:.0f} s) would save ~{saved:.0f} s")


def shape_key(shape: Shape, device_type: str, members: int = 1) -> str:
    """The compile cache's name for a step: its shape, device and pack size."""
    text = f"{sorted(shape.to_dict().items())}|{device_type}|{members}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir() -> Path | None:
    """The shared compile cache in use (``$LAB_COMPILE_CACHE``), or None (torch's default)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else None


def use_cache(path: str | os.PathLike) -> None:
    """Send this process's (and its children's) inductor/FX-graph and Triton caches to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(path)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")


def warm(key: str) -> bool:
    """True when a step with this key was compiled into the shared cache before."""
    d = cache_dir()
    return d is not None and (d / "lab-compiled" / key).exists()


def mark_compiled(key: str) -> None:
    """Record that a step with this key is in the shared cache (no-op without one)."""
    d = cache_dir()
    if d is not None:
        (d / "lab-compiled").mkdir(parents=True, exist_ok=True)
        (d / "lab-compiled" / key).touch()
