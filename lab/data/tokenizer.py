"""Tokenizers: byte-level by default, a byte-level BPE trained locally as an option.

The byte tokenizer maps UTF-8 bytes to ids 0..255 (vocab 256) and uses byte 0 (NUL, stripped from
every corpus by the builder) as the document separator, so one token is exactly one byte and
bits-per-byte is ``loss / ln 2``. The BPE tokenizer (HuggingFace ``tokenizers``, byte-level
pre-tokenisation, so any text encodes) is trained on the corpus's *training* split only, with each
domain capped to the same number of bytes so no domain dominates the merges; it is cached beside
the corpus and keyed by its vocabulary size. Id 0 is its ``<|eot|>`` separator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np

from lab.io import atomic_write_text, locked

EOT_TEXT = "<|eot|>"
BPE_TRAIN_BYTES_PER_DOMAIN = 8 << 20  # 8 MB per domain is plenty for a few thousand merges


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_id: int

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens; vocab 256; id 0 separates documents."""

    name = "byte"
    vocab_size = 256
    eot_id = 0

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE from the ``tokenizers`` library, loaded from a trained JSON file."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size()
        self.eot_id = self._tok.token_to_id(EOT_TEXT)
        self.name = f"bpe{self.vocab_size}"

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.uint16) for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


def iter_documents(corpus: Path, domain: str, split: str) -> Iterator[str]:
    """Texts of one domain/split of a built corpus (``text/<domain>.<split>.jsonl``)."""
    with open(corpus / "text" / f"{domain}.{split}.jsonl", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def train_bpe(corpus: Path, domains: list[str], vocab_size: int, out: Path) -> None:
    """Train a byte-level BPE on the training split (per-domain byte cap) and save it to ``out``."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    def capped() -> Iterator[str]:
        for d in domains:
            seen = 0
            for text in iter_documents(corpus, d, "train"):
                yield text
                seen += len(text.encode("utf-8"))
                if seen >= BPE_TRAIN_BYTES_PER_DOMAIN:
                    break

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT_TEXT],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(capped(), trainer=trainer)
    atomic_write_text(out, tok.to_str())


def get_tokenizer(kind: str, corpus: Path, domains: list[str], vocab_size: int = 4096) -> Tokenizer:
    """The tokenizer ``kind`` ("byte" or "bpe") for a built corpus, training a BPE once if needed."""
    if kind == "byte":
        return ByteTokenizer()
    if kind != "bpe":
        raise ValueError(f"data.tokenizer: {kind!r} is not one of byte, bpe")
    path = corpus / "tokenizers" / f"bpe{vocab_size}.json"
    with locked(corpus / "tokenizers" / ".lock"):
        if not path.exists():
            print(f"[data] training a {vocab_size}-token BPE on {corpus.name} ({len(domains)} domains)", flush=True)
            train_bpe(corpus, domains, vocab_size, path)
    return BPETokenizer(path)
