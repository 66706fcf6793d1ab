"""Small filesystem helpers shared by the corpus builder, the trainer and the results tables.

Everything a run or a build leaves behind is written atomically (a temporary file in the same
folder, then ``os.replace``), so a reader never sees a half-written file even when a process is
killed mid-write or many workers finish at once. ``locked`` serialises builders across processes
(e.g. sweep workers that all find the corpus missing at the same moment).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON with sorted keys and a trailing newline (stable diffs, deterministic hashes)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    # numpy scalars and paths show up in results; turn them into plain JSON values.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def jsonl_rows(text: str) -> list[tuple[str, dict | None]]:
    """Each non-blank line of a JSONL text with its JSON object, or None where the line is not one
    (torn by a kill mid-write, or garbage): the one parser of the run folder's line files."""
    out: list[tuple[str, dict | None]] = []
    for ln in text.splitlines():
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            row = None
        out.append((ln, row if isinstance(row, dict) else None))
    return out


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line: what one-line error messages quote."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


@contextlib.contextmanager
def try_locked(path: str | os.PathLike) -> Iterator[bool]:
    """Try to take an exclusive advisory lock on ``path`` without waiting; yield whether it was taken.

    The lock is held for the block and dies with the process (a killed holder never leaves it stuck).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
