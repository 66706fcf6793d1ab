"""What every analysis notebook does first: find the repository (Jupyter may start in ``analysis/``),
read a relative folder from there, open it, and say what it holds and what is missing."""

from __future__ import annotations

from pathlib import Path

from lab.report.sources import Source, open_source


def repo_root(start: str | Path | None = None) -> Path:
    """The first folder up from ``start`` (the cwd) holding ``pyproject.toml`` and ``lab/``; else ``start``."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "lab").is_dir():
            return p
    return here


def resolve(path: str | Path) -> Path:
    """``path`` itself when absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


def open_folder(path: str | Path, label: str = "") -> Source:
    """Open a study, demo or sweep folder and print one line on what it holds, one per missing part."""
    src = open_source(resolve(path))
    head = f"{label}: " if label else ""
    print(f"{head}{src.path}: {src.kind}; holds: {', '.join(src.sweeps) or 'nothing to analyse'}")
    for p in src.problems:
        print(f"{'  ' if label else ''}missing: {p}")
    return src
