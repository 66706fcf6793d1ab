"""Per-domain token shards: tokenise a built text corpus once, then memory-map it.

Layout under a built corpus folder (see :mod:`lab.data.build` for the text stage)::

    tokens/<tokenizer name>/<domain>.<split>.bin   uint16 token ids, documents separated by eot
    tokens/<tokenizer name>/meta.json              vocab, eot id, tokens and UTF-8 bytes per split

Bytes are counted per split as the UTF-8 bytes of the text plus one per document separator, so
bits-per-byte is ``loss_nats * tokens / bytes / ln 2`` and, for the byte tokenizer, exactly
``loss / ln 2``. Tokenisation happens on first use, under a lock, into a temporary folder that is
renamed into place, so concurrent sweep workers never read a half-written shard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.data.tokenizer import Tokenizer, iter_documents
from lab.io import atomic_write_json, locked, read_json

SPLITS = ("train", "val")
_ENCODE_BATCH = 256  # documents per tokenizer call


@dataclass
class DomainShards:
    name: str
    train: np.ndarray  # memory-mapped uint16
    val: np.ndarray
    train_bytes: int
    val_bytes: int

    @property
    def val_bytes_per_token(self) -> float:
        return self.val_bytes / max(1, len(self.val))


class TokenCorpus:
    """Memory-mapped token shards of every domain of one corpus, for one tokenizer."""

    def __init__(self, folder: Path):
        self.folder = folder
        meta = read_json(folder / "meta.json")
        self.meta = meta
        self.vocab_size: int = meta["vocab_size"]
        self.eot_id: int = meta["eot_id"]
        self.tokenizer: str = meta["tokenizer"]
        self.domains: dict[str, DomainShards] = {}
        for name, info in sorted(meta["domains"].items()):
            mm = {s: _memmap(folder / f"{name}.{s}.bin") for s in SPLITS}
            self.domains[name] = DomainShards(
                name, mm["train"], mm["val"], info["train"]["bytes"], info["val"]["bytes"]
            )

    @property
    def names(self) -> list[str]:
        return list(self.domains)

    @functools.cached_property
    def fingerprint(self) -> str:
        """What the run trains on, in 16 hex digits: the tokenizer, token counts and each domain's text
        hash (``manifest.json``). Changes when files are added to or edited in a user corpus."""
        manifest = self.folder.parent.parent / "manifest.json"
        texts = {}
        if manifest.is_file():
            texts = {d: e.get("sha256") for d, e in (read_json(manifest).get("domains") or {}).items()}
        doc = {"tokens": self.meta, "texts": texts}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def train_tokens(self) -> dict[str, int]:
        return {n: len(d.train) for n, d in self.domains.items()}


def _memmap(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")


def ensure_shards(corpus: Path, tokenizer: Tokenizer, progress: bool = True) -> TokenCorpus:
    """Token shards of ``corpus`` for ``tokenizer``, building them once (locked, atomic)."""
    out = corpus / "tokens" / tokenizer.name
    if not (out / "meta.json").exists():
        with locked(corpus / "tokens" / f".{tokenizer.name}.lock"):
            if not (out / "meta.json").exists():
                _build_shards(corpus, tokenizer, out, progress)
    return TokenCorpus(out)


def _build_shards(corpus: Path, tokenizer: Tokenizer, out: Path, progress: bool) -> None:
    manifest = read_json(corpus / "manifest.json")
    domains = sorted(manifest["domains"])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    meta_domains = {}
    for d in domains:
        meta_domains[d] = {}
        for split in SPLITS:
            n_tok = n_bytes = 0
            with open(tmp / f"{d}.{split}.bin", "wb") as f:
                batch: list[str] = []
                for text in iter_documents(corpus, d, split):
                    batch.append(text)
                    if len(batch) == _ENCODE_BATCH:
                        n_tok, n_bytes = _write(f, tokenizer, batch, n_tok, n_bytes)
                        batch = []
                if batch:
                    n_tok, n_bytes = _write(f, tokenizer, batch, n_tok, n_bytes)
            meta_domains[d][split] = {"tokens": n_tok, "bytes": n_bytes}
        if progress:
            tr = meta_domains[d]["train"]
            print(
                f"[data] tokenised {d:<14s} {tr['tokens'] / 1e6:8.2f} M train tokens "
                f"({tr['bytes'] / max(1, tr['tokens']):.2f} bytes/token)",
                flush=True,
            )
    atomic_write_json(
        tmp / "meta.json",
        {
            "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "corpus": manifest.get("name", corpus.name),
            "domains": meta_domains,
        },
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    if progress:
        print(f"[data] shards for {tokenizer.name} written in {time.time() - t0:.1f}s -> {out}", flush=True)


def _write(f, tokenizer: Tokenizer, texts: list[str], n_tok: int, n_bytes: int) -> tuple[int, int]:
    sep = np.asarray([tokenizer.eot_id], dtype=np.uint16)
    for text, ids in zip(texts, tokenizer.encode_batch(texts)):
        f.write(ids.astype(np.uint16, copy=False).tobytes())
        f.write(sep.tobytes())
        n_tok += len(ids) + 1
        n_bytes += len(text.encode("utf-8")) + 1
    return n_tok, n_bytes


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Convert a loss in nats/token to bits/byte given the average UTF-8 bytes per token."""
    return loss_nats / (math.log(2) * bytes_per_token)
