"""Data: the built-in corpus (text stage), tokenizers, token shards, mixtures.

``python -m lab.data build`` builds the built-in corpus; training calls :func:`load_corpus`,
which builds whatever is missing on demand (corpus text, tokenizer, token shards) and returns
memory-mapped shards. Modules: ``sources``/``build`` (fetch, clean, de-duplicate, chunk, split),
``tokenizer`` (byte, BPE), ``shards`` (token files), ``mixture`` (proportions, sampler,
validation sets), ``synthetic`` (a tiny generated corpus for pure-logic tests).
"""

from __future__ import annotations

from pathlib import Path

from lab.config import DataConfig
from lab.data.shards import TokenCorpus, ensure_shards
from lab.data.tokenizer import get_tokenizer
from lab.io import read_json


def load_corpus(cfg: DataConfig, progress: bool = True) -> TokenCorpus:
    """Token shards for ``cfg`` (corpus spec + tokenizer), building what is missing."""
    from lab.data.build import ensure_corpus

    folder = Path(ensure_corpus(cfg.corpus, root=cfg.root))
    domains = sorted(read_json(folder / "manifest.json")["domains"])
    if not domains:
        raise ValueError(f"data.corpus: {cfg.corpus!r} has no domains with text")
    tok = get_tokenizer(cfg.tokenizer, folder, domains, cfg.bpe_vocab_size)
    return ensure_shards(folder, tok, progress=progress)
