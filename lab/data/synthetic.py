"""A tiny deterministic synthetic corpus for tests that need the corpus layout but no real text.

Text comes from a seeded word grammar: each domain has its own vocabulary of pseudo-words
(built from a domain-specific syllable set), words are drawn with Zipf probabilities
``p(rank r) ∝ r^-s`` (s = 1.1, close to natural text; Zipf 1935, Piantadosi 2014, "Zipf's word
frequency law in natural language", Psychon. Bull. Rev. 21:1112), and a small shared set of
function words glues sentences together. Domains therefore differ in unigram statistics, as
real domains do, while sharing some tokens. The output has the same layout and manifest as
:mod:`lab.data.build` (kind ``"synthetic"``) and is written in well under a second.
"""

from __future__ import annotations

import bisect
import itertools
import random
from pathlib import Path

from lab.data.build import write_corpus
from lab.data.clean import Doc
from lab.data.sources import DOMAIN_RE

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_FUNCTION_WORDS = ("the", "of", "and", "a", "to", "in", "is", "that", "for", "it")
ZIPF_EXPONENT = 1.1


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pseudo-words from a syllable set of this domain's own."""
    syllables = [c + v for c in rng.sample(_CONSONANTS, 8) for v in rng.sample(_VOWELS, 3)]
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3)))] = None
    return list(words)


def _document(rng: random.Random, vocab: list[str], cum: list[float], sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = []
        for _ in range(rng.randint(4, 14)):
            if rng.random() < 0.25:
                words.append(rng.choice(_FUNCTION_WORDS))
            else:
                words.append(vocab[bisect.bisect_left(cum, rng.random() * cum[-1])])
        out.append(" ".join(words).capitalize() + ".")
    # Paragraphs of ~4 sentences, so chunking at blank lines has something to cut.
    return "\n\n".join(" ".join(out[i:i + 4]) for i in range(0, len(out), 4))


def make_synthetic_corpus(
    out: Path,
    domains: tuple[str, ...] = ("a", "b", "c"),
    docs_per_domain: int = 40,
    seed: int = 0,
    vocab_size: int = 500,
    sentences_per_doc: int = 12,
    val_fraction: float = 0.1,
) -> Path:
    """Write a synthetic corpus (``out/text/<domain>.{train,val}.jsonl`` + manifest) to ``out``.

    Deterministic in ``seed`` (``random.Random`` with a string seed is stable across runs and
    platforms). Every domain gets at least one val document.
    """
    out = Path(out)
    for d in domains:
        if not DOMAIN_RE.match(d):
            raise ValueError(f"bad domain name {d!r}: use lowercase letters, digits and _")
    weights = list(itertools.accumulate((r + 1) ** -ZIPF_EXPONENT for r in range(vocab_size)))
    docs, sources = {}, {}
    for d in domains:
        rng = random.Random(f"lab-synthetic:{seed}:{d}")
        vocab = _vocabulary(rng, vocab_size)
        docs[d] = [
            Doc(f"{d}/{i:05d}", "synthetic", _document(rng, vocab, weights, sentences_per_doc))
            for i in range(docs_per_domain)
        ]
        sources[d] = [{"name": "synthetic", "registry": "synthetic", "version": str(seed), "sha256": None}]
    config = {
        "chunk_bytes": None,
        "val_fraction": val_fraction,
        "cap_bytes_per_domain": None,
        "seed": seed,
        "vocab_size": vocab_size,
        "zipf_exponent": ZIPF_EXPONENT,
    }
    write_corpus(out, out.name, "synthetic", docs, sources, [], config, val_fraction, None)
    return out
