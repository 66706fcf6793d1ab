"""CPU kernels written for the proxies' small shapes, compiled on first use and cached.

Each kernel is one C file beside this module (sharing ``simd.h``), built with the machine's C compiler (``cc``/``gcc``,
``-O3 -march=native -fopenmp``) into ``$LAB_HOME/kernels/<name>-<key>.so`` and loaded with ctypes.
The key hashes the source, the compiler's version, the flags and the CPU's model and feature flags,
so a shared home on a cluster of different CPUs keeps one build per CPU. Building takes about a
second; a machine without a compiler (or ``LAB_KERNELS=0``) gets None, and the callers fall back to
torch's own kernels with one warning.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.paths import kernels_dir

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]
_LOADED: dict[str, ctypes.CDLL | None] = {}


def enabled() -> bool:
    """False when ``LAB_KERNELS=0`` (torch's kernels everywhere, for comparison or debugging)."""
    return os.environ.get("LAB_KERNELS", "1") != "0"


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _cpu_id() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()


def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (``lab/kernels/<name>.c``), building it once; None when it
    cannot be built here (the reason said once on stderr)."""
    if name in _LOADED:
        return _LOADED[name]
    _LOADED[name] = lib = _build_and_load(name) if enabled() else None
    return lib


def _build_and_load(name: str) -> ctypes.CDLL | None:
    src = Path(__file__).with_name(f"{name}.c")
    cc = _compiler()
    if cc is None:
        return _unavailable(name, "no C compiler (cc, gcc or clang) on PATH")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return _unavailable(name, f"{cc} --version failed: {e}")
    headers = "".join(h.read_text() for h in sorted(src.parent.glob("*.h")))  # what the sources include
    key = hashlib.sha256("\0".join([src.read_text(), headers, version, " ".join(FLAGS), _cpu_id()]).encode()
                         ).hexdigest()[:16]
    out = kernels_dir() / f"{name}-{key}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            built = Path(tmp) / out.name
            proc = subprocess.run([cc, *FLAGS, "-o", str(built), str(src), "-lm"], capture_output=True, text=True)
            if proc.returncode != 0:
                return _unavailable(name, f"{cc} failed: {proc.stderr.strip().splitlines()[-1:]}")
            os.replace(built, out)  # atomic: concurrent builders leave one complete file
    try:
        return ctypes.CDLL(str(out))
    except OSError as e:
        return _unavailable(name, f"cannot load {out}: {e}")


def _unavailable(name: str, why: str) -> None:
    print(f"[lab] kernel {name!r} unavailable ({why}); using torch's kernels instead", file=sys.stderr, flush=True)
    return None
