"""Where the lab keeps data it builds: corpora, staging downloads, tokenizers, compiled kernels.

``LAB_HOME`` (environment) overrides the default ``~/.cache/lab``. Nothing here is committed to
the repository; everything is rebuilt deterministically on demand.
"""

from __future__ import annotations

import os
from pathlib import Path


def lab_home() -> Path:
    """Root of the lab's cache (``$LAB_HOME`` or ``~/.cache/lab``)."""
    env = os.environ.get("LAB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lab"


def corpus_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder of a built corpus (``<root>/corpus/<name>``)."""
    return Path(root or lab_home()) / "corpus" / name


def stage_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder where downloaded source packages are staged before extraction."""
    return Path(root or lab_home()) / "stage"


def kernels_dir() -> Path:
    """Compiled CPU kernels (:mod:`lab.kernels`), one shared object per source, compiler and CPU."""
    return lab_home() / "kernels"


def reference_dir() -> Path | None:
    """Published reference data for the fit checks (``shared/reference``), read in place, never copied.

    ``$LAB_REFERENCE`` when set, else ``../shared/reference`` beside the repository; None when absent.
    """
    env = os.environ.get("LAB_REFERENCE")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "reference")
    for c in candidates:
        if c.is_dir():
            return c
    return None
