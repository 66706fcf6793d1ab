"""Pure text cleaning for the corpus builder: normalise, strip markup, chunk, dedup, split.

Nothing here touches the filesystem or the network, so every rule is unit-tested on strings
(``tests/test_corpus.py``). The rules and why they exist (measured on the real sources, see
``shared/notes/corpus.md`` §5):

* ``normalise``: CRLF -> LF, BOM, NUL (byte 0 is the trainer's document separator), ANSI colour
  codes (``fortunes-zh``), backspace overstrike, other C0 controls, trailing blanks per line,
  at most two blank lines in a row. Output text and the dedup key both use this form.
* ``strip_brown_tags``: the Brown Corpus ships ``word/tag`` tokens; keep the word, then undo the
  tokeniser's spacing around punctuation and its ````...''`` quotes.
* ``strip_webster_lines``: GCIDE tags ~10 % of its lines with a bare source attribution such as
  ``[1913 Webster]``; those lines carry no language.
* ``html_to_text``: GAP manuals are HTML; html.parser, with script/style and navigation removed.
* ``po_msgstrs``: the translated side of a gettext ``.po`` file (the English ``msgid`` side
  would leak English into a multilingual domain).
* ``chunk_text``: big single files (GCIDE 40 MB, the KJV 4 MB) are cut at blank lines into
  ~``chunk_bytes`` pieces so that they spread over train and validation and over byte caps.
* ``dedup`` + ``split_of``: exact dedup by sha256 of the normalised text, then a hash-based
  train/val split. Splitting by content hash (not by random line) keeps a chunk and its exact
  copies on one side; the notes found near-duplicate plays and verses otherwise leak.

References: W. N. Francis & H. Kucera, *Brown Corpus Manual* (1964/1979) for the tag format;
Lee et al., "Deduplicating Training Data Makes Language Models Better", arXiv:2107.06499, for
why exact dedup before a held-out split matters.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from typing import Iterable, NamedTuple

# ---------------------------------------------------------------------------------- normalise

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")
_OVERSTRIKE = re.compile(r".\x08")  # "_\bx" underlines and "x\bx" bold in old text files
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all C0 but \t and \n (\r is handled first)
_BLANK_RUNS = re.compile(r"\n\n\n\n+")


def decode(data: bytes) -> str:
    """UTF-8 with replacement: a stray Latin-1 byte must not stop a build (or change per LANG)."""
    return data.decode("utf-8", errors="replace")


def normalise(text: str) -> str:
    """Canonical form of a document: what is written out and what dedup hashes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\ufeff", "")
    # The `in` guards skip whole-text regex passes that rarely apply (2-3x faster on code).
    if "\x1b" in text:
        text = _ANSI.sub("", text)
    if "\x08" in text:
        text = _OVERSTRIKE.sub("", text)
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    if "\n\n\n\n" in text:
        text = _BLANK_RUNS.sub("\n\n\n", text)
    return text.strip("\n")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


# ------------------------------------------------------------------------- source-specific rules

_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([.,;:?!)\]}'])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{]) +")


def strip_brown_tags(text: str) -> str:
    """``The/at jury/nn said/vbd ./.`` -> ``The jury said.`` (one paragraph per blank-line block).

    The tag is whatever follows the last ``/`` of a token, so ``1/2/cd`` keeps ``1/2``. The
    tokeniser's ````/'' `` quotes become ``"``; spaces before closing punctuation are removed.
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        words = _BROWN_TOKEN.sub(r"\1", block).split()
        if not words:
            continue
        line = " ".join(words)
        line = line.replace("`` ", '"').replace("``", '"').replace(" ''", '"').replace("''", '"')
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        line = _SPACE_AFTER_OPEN.sub(r"\1", line)
        paragraphs.append(line)
    return "\n\n".join(paragraphs)


# A line holding only a source attribution: [1913 Webster], [WordNet 1.5 +PJC], [PJC], [AS] ...
# Usage labels on a line of their own ([Obs.], [Colloq.]) are language and stay.
_WEBSTER_LINE = re.compile(
    r"^[ \t]*\[(?:[^\]\n]*(?:Webster|WordNet|PJC|Century Dict)[^\]\n]*|AS|RDH|MW|JC)\][ \t]*\n?",
    re.M,
)


def strip_webster_lines(text: str) -> str:
    """Drop GCIDE's attribution-only lines (``[1913 Webster]`` alone is ~200k lines, ~4 MB)."""
    return _WEBSTER_LINE.sub("", text)


_DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(s: str) -> int:
    """Decode a dictd index number (base 64, most significant digit first)."""
    n = 0
    for ch in s:
        n = n * 64 + _DICTD_B64.index(ch)
    return n


def strip_dictd_headers(data: bytes, index: str) -> bytes:
    """Remove the ``00-database-*`` (and ``00-<dict>-*``) metadata entries from a dictd body.

    ``index`` is the ``.index`` file: ``headword<TAB>offset<TAB>length`` with dictd numbers
    giving byte ranges in the uncompressed ``.dict``. Using it cuts exactly the metadata
    entries, whatever text they hold (GCIDE's carries the GPL notice and file banners).
    """
    ranges = []
    for line in index.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0].startswith("00-") and parts[0][3:4].isalpha():
            start = dictd_number(parts[1])
            ranges.append((start, start + dictd_number(parts[2])))
    if not ranges:
        return data
    ranges.sort()
    out, pos = [], 0
    for start, end in ranges:
        if start > pos:
            out.append(data[pos:start])
        pos = max(pos, end)
    out.append(data[pos:])
    return b"".join(out)


class _TextExtractor(HTMLParser):
    """Collects visible text; block elements become line breaks."""

    SKIP = {"script", "style", "head", "noscript", "template"}
    BLOCK = {
        "p", "div", "br", "tr", "li", "ul", "ol", "table", "pre", "h1", "h2", "h3", "h4",
        "h5", "h6", "dt", "dd", "dl", "blockquote", "hr", "section", "article", "title",
    }

    def __init__(self, skip_classes: Iterable[str], skip_ids: Iterable[str]):
        super().__init__(convert_charrefs=True)
        self.skip_classes = set(skip_classes)
        self.skip_ids = set(skip_ids)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, opened a skipped region)
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        skip = tag in self.SKIP or bool(classes & self.skip_classes) or attrs.get("id") in self.skip_ids
        if tag in ("br", "hr", "img", "meta", "link", "input"):  # void elements: no end tag
            if tag in self.BLOCK and not self.skipping:
                self.parts.append("\n")
            return
        self.stack.append((tag, skip))
        self.skipping += skip
        if tag in self.BLOCK and not self.skipping:
            self.parts.append("\n\n" if tag in ("p", "pre", "table", "dl") or tag[0] == "h" else "\n")

    def handle_endtag(self, tag):
        # Pop to the matching open tag; tolerate sloppy HTML (unclosed <p>, <li>).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, skip in self.stack[i:]:
                    self.skipping -= skip
                del self.stack[i:]
                break
        if tag in self.BLOCK and not self.skipping:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(markup: str, skip_classes: Iterable[str] = (), skip_ids: Iterable[str] = ()) -> str:
    """Visible text of an HTML page: no script/style/head, nor elements with a class in
    ``skip_classes`` or an id in ``skip_ids`` (navigation bars and the like)."""
    parser = _TextExtractor(skip_classes, skip_ids)
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    # Inline runs of spaces from source indentation, then the usual blank-line limits.
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_PO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_PO_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": ""}


def _po_unquote(s: str) -> str:
    if "\\" not in s:
        return s
    return re.sub(r"\\(.)", lambda m: _PO_ESCAPES.get(m.group(1), m.group(1)), s)


def po_msgstrs(text: str) -> str:
    """The translated strings of a gettext ``.po`` file, one per paragraph.

    Skips the header (the ``msgstr`` of the empty ``msgid``), obsolete ``#~`` entries and empty
    translations; continuation lines (``"..."`` on their own) are joined to their ``msgstr``.
    """
    entries: list[tuple[str, str]] = []
    msgid, msgstr, field = [], [], None

    def flush():
        if field is not None:
            entries.append(("".join(msgid), "".join(msgstr)))

    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _PO_STRING.search(line)
        s = _po_unquote(m.group(1)) if m else ""
        if line.startswith("msgid ") or line.startswith("msgctxt "):
            if field == "msgstr":
                flush()
                msgid, msgstr = [], []
            field = "msgid" if line.startswith("msgid ") else "msgctxt"
            if field == "msgid":
                msgid = [s]
        elif line.startswith("msgid_plural"):
            field = "msgid_plural"
        elif line.startswith("msgstr"):
            field = "msgstr"
            msgstr.append(("\n" if msgstr else "") + s)
        elif line.startswith('"'):
            if field == "msgid":
                msgid.append(s)
            elif field == "msgstr":
                msgstr.append(s)
    flush()
    return "\n\n".join(t.strip() for i, t in entries if i and t.strip())


def fortunes_to_text(text: str) -> str:
    """A fortune file separates entries with ``%`` lines; make them blank lines (paragraphs)."""
    return re.sub(r"(?m)^%%?[ \t]*$", "", text)


# ---------------------------------------------------------------------------------- chunking

def _hard_split(text: str, limit: int) -> list[str]:
    """Split one over-long line at UTF-8 character boundaries into <= ``limit``-byte pieces."""
    data = text.encode("utf-8")
    pieces, start = [], 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # inside a multi-byte char
            end -= 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


def _pack(units: list[str], sep: str, limit: int) -> list[str]:
    """Greedily join ``units`` with ``sep`` into pieces of at most ``limit`` bytes."""
    out, cur, size, nsep = [], [], 0, len(sep.encode("utf-8"))
    for u in units:
        n = utf8_len(u)
        if cur and size + nsep + n > limit:
            out.append(sep.join(cur))
            cur, size = [], 0
        size += (nsep if cur else 0) + n
        cur.append(u)
    if cur:
        out.append(sep.join(cur))
    return out


def chunk_text(text: str, chunk_bytes: int) -> list[str]:
    """Cut ``text`` at blank lines into pieces of at most ``chunk_bytes`` UTF-8 bytes.

    Paragraphs are packed greedily; a paragraph over the limit is cut at line breaks, and a
    single line over the limit at character boundaries. Joining the pieces with blank lines
    gives back ``text`` up to the number of blank lines at each cut.
    """
    if utf8_len(text) <= chunk_bytes:
        return [text] if text.strip() else []
    units: list[str] = []
    for para in re.split(r"\n\n+", text):
        if not para.strip():
            continue
        if utf8_len(para) <= chunk_bytes:
            units.append(para)
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            lines.extend(_hard_split(line, chunk_bytes) if utf8_len(line) > chunk_bytes else [line])
        units.extend(_pack(lines, "\n", chunk_bytes))
    return _pack(units, "\n\n", chunk_bytes)


# ------------------------------------------------------------------------- dedup and the split

class Doc(NamedTuple):
    """One output document (a chunk): stable id, source name, cleaned text."""

    id: str
    source: str
    text: str


def dedup(docs: Iterable[Doc]) -> tuple[list[Doc], int]:
    """Keep one of each exact-duplicate text (the smallest id, so input order doesn't matter).

    Returns the kept documents sorted by id, and how many were dropped.
    """
    best: dict[str, Doc] = {}
    n = 0
    for d in docs:
        n += 1
        key = sha256_text(d.text)
        if key not in best or d.id < best[key].id:
            best[key] = d
    kept = sorted(best.values(), key=lambda d: d.id)
    return kept, n - len(kept)


def unit_hash(text: str, salt: str = "") -> float:
    """sha256 of ``salt + text`` mapped to [0, 1): a deterministic, content-addressed coin."""
    h = hashlib.sha256((salt + text).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_train_val(docs: list[Doc], val_fraction: float) -> tuple[list[Doc], list[Doc]]:
    """Hash-based split: a doc is in val iff ``unit_hash(text) < val_fraction``.

    Guarantees (for two or more docs) at least one val and one train doc: if no doc hashed into
    val, the lowest-hash one moves there; if all did, the highest-hash one moves to train.
    Both lists keep the input order.
    """
    if not docs:
        return [], []
    hashes = [unit_hash(d.text) for d in docs]
    in_val = [h < val_fraction for h in hashes]
    if len(docs) >= 2:
        if not any(in_val):
            in_val[min(range(len(docs)), key=hashes.__getitem__)] = True
        if all(in_val):
            in_val[max(range(len(docs)), key=hashes.__getitem__)] = False
    train = [d for d, v in zip(docs, in_val) if not v]
    val = [d for d, v in zip(docs, in_val) if v]
    return train, val


def halve(doc: Doc) -> list[Doc]:
    """Cut a domain's only document in two (at the line break nearest the middle), so that the
    domain can have both a train and a val document. Returns ``[doc]`` if it can't be cut."""
    text = doc.text
    mid = len(text) // 2
    left, right = text.rfind("\n", 0, mid), text.find("\n", mid)
    candidates = [i for i in (left, right) if 0 < i < len(text) - 1]
    cut = min(candidates, key=lambda i: abs(i - mid)) if candidates else mid
    a, b = text[:cut].strip("\n"), text[cut:].strip("\n")
    if not a.strip() or not b.strip():
        return [doc]
    return [Doc(doc.id + "a", doc.source, a), Doc(doc.id + "b", doc.source, b)]


def cap_docs(docs: list[Doc], cap_bytes: int) -> list[Doc]:
    """A deterministic byte-capped sample: docs in sha256(id) order while they fit the cap.

    Ordering by the id's hash (not the text's) keeps the sample independent of the split
    coin, so a capped domain keeps the same val fraction as the full one.
    """
    out, total = [], 0
    for d in sorted(docs, key=lambda d: unit_hash(d.id, "cap:")):
        n = utf8_len(d.text)
        if total + n <= cap_bytes:
            out.append(d)
            total += n
    return sorted(out, key=lambda d: d.id)
