"""LR schedules: warmup, cosine floor, WSD plateau and decay."""

import pytest

from lab.schedule import lr_multiplier


def _curve(schedule, total=100, **kw):
    return [lr_multiplier(s, total, schedule, **kw) for s in range(total)]


def test_cosine_warms_up_then_reaches_floor():
    c = _curve("cosine", warmup=0.1, min_lr_ratio=0.1)
    assert c[0] < c[5] < c[9] <= 1.0
    assert max(c) == pytest.approx(1.0)
    assert c[-1] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(c[10:], c[11:]))  # monotone after warmup


def test_wsd_is_flat_then_decays_over_the_last_fraction():
    c = _curve("wsd", warmup=5, decay=0.2, min_lr_ratio=0.0, decay_shape="linear")
    assert all(v == 1.0 for v in c[5:80])
    assert c[80] < 1.0 and c[-1] == pytest.approx(0.0)


def test_constant_and_unknown():
    assert _curve("constant", warmup=0)[-1] == 1.0
    with pytest.raises(ValueError, match="train.schedule"):
        lr_multiplier(0, 10, "linear-ish")
