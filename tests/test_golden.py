"""Golden losses: the tiny proxy on the synthetic corpus ends each logged window at the losses recorded here.

A change in numerics (initialisation, data order, the schedule, the optimizer, the model's maths) moves
these numbers; a refactor must not. Recorded on CPU in fp32 with 1 thread (lab 2026-12, commit dd76d88
and its successors). The tolerance allows a different BLAS or CPU to round differently, and nothing more.
"""

import json

import pytest

from lab.train import train
from tests.conftest import tiny_run

TRAIN_LOSS = {4: 5.345605, 8: 4.854428, 12: 4.442001, 16: 4.143042, 20: 3.969257, 24: 3.883902}  # window means
VAL_LOSS = {12: 4.231301, 24: 3.856797}  # nats/token, the 3 domains weighted by the (natural) mixture
REL_TOL = 2e-4


def test_tiny_config_reproduces_its_golden_losses(tmp_path, synthetic_corpus):
    train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=24 * 2048, log_every=4, eval_every=12))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: r["loss"] for r in rows} == pytest.approx(TRAIN_LOSS, rel=REL_TOL)
    assert {r["step"]: r["loss_val"] for r in rows if "loss_val" in r} == pytest.approx(VAL_LOSS, rel=REL_TOL)
