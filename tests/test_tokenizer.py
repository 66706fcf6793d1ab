"""Byte and BPE tokenizers, token shards and bits-per-byte bookkeeping."""

import math

import numpy as np
import pytest

from lab.data.shards import bits_per_byte, ensure_shards
from lab.data.tokenizer import ByteTokenizer, get_tokenizer, iter_documents


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "naïve café — 東京"
    ids = tok.encode_batch([text])[0]
    assert len(ids) == len(text.encode("utf-8")) and tok.decode(ids) == text


def test_byte_shards_count_bytes_exactly(synthetic_corpus):
    shards = ensure_shards(synthetic_corpus, ByteTokenizer(), progress=False)
    for name, d in shards.domains.items():
        assert d.val_bytes == len(d.val)  # one token per byte, separators included
        docs = list(iter_documents(synthetic_corpus, name, "val"))
        assert int((np.asarray(d.val) == 0).sum()) == len(docs)


def test_bpe_is_trained_once_cached_and_lossless(synthetic_corpus):
    domains = ["a", "b", "c"]
    tok = get_tokenizer("bpe", synthetic_corpus, domains, vocab_size=400)
    assert tok.eot_id == 0 and 256 < tok.vocab_size <= 400
    text = next(iter_documents(synthetic_corpus, "a", "val"))
    ids = tok.encode_batch([text])[0]
    assert tok.decode(ids) == text and len(ids) < len(text.encode("utf-8"))
    path = synthetic_corpus / "tokenizers" / "bpe400.json"
    mtime = path.stat().st_mtime_ns
    get_tokenizer("bpe", synthetic_corpus, domains, vocab_size=400)
    assert path.stat().st_mtime_ns == mtime  # cached, not retrained
    shards = ensure_shards(synthetic_corpus, tok, progress=False)
    d = shards.domains["a"]
    assert d.val_bytes_per_token > 1.5
    assert bits_per_byte(2.0, d.val_bytes_per_token) == pytest.approx(2.0 / math.log(2) / d.val_bytes_per_token)


def test_training_with_bpe(tmp_path, synthetic_corpus):
    from lab.train import train
    from tests.conftest import tiny_run

    cfg = tiny_run(tmp_path / "run", synthetic_corpus, tokens=8 * 2048)
    cfg.data.tokenizer, cfg.data.bpe_vocab_size = "bpe", 400
    r = train(cfg)
    assert r["status"] == "completed" and r["tokenizer"].startswith("bpe") and r["vocab_size"] > 256
    assert r["bpb_val"] < r["loss_val"] / math.log(2)  # more than one byte per token
