"""train.compile=auto decides from the plan; a sweep's runs share one compile cache."""

import os

import pytest

from lab import compile as lc
from lab.compile import decide


def test_auto_compiles_on_a_gpu_and_on_a_cpu_only_when_it_pays():
    assert decide("auto", "cuda", 1e9, 1, False).on
    short = decide("auto", "cpu", 1e11, 1, False)  # ~2.5 s eager: compiling costs more than it saves
    assert not short.on and "would save" in short.reason
    long_run = lc.COLD_S * lc.CPU_RATE / (1 - 1 / lc.CPU_GAIN) * 1.01  # just repays a cold compile
    assert decide("auto", "cpu", long_run, 1, False).on
    assert not decide("auto", "cpu", long_run, 4, False).on  # four threads: a quarter of the time to save
    warm_run = lc.WARM_S * lc.CPU_RATE / (1 - 1 / lc.CPU_GAIN) * 1.01
    assert decide("auto", "cpu", warm_run, 1, True).on and not decide("auto", "cpu", warm_run, 1, False).on
    assert decide("on", "cpu", 1.0, 1, False).on and not decide("off", "cuda", 1e18, 1, False).on


def test_shared_cache_and_its_markers(tmp_path, monkeypatch):
    for var in (lc.CACHE_ENV, "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert lc.cache_dir() is None and not lc.warm("k")
    lc.mark_compiled("k")  # no cache: nothing recorded, nothing raised
    lc.use_cache(tmp_path / "cc")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    assert not lc.warm("k")
    lc.mark_compiled("k")
    assert lc.warm("k") and not lc.warm("other")


def test_shape_key_names_shape_device_and_pack_size():
    from lab.counting import resolve_shape

    s = resolve_shape(vocab_size=256, seq_len=64, num_layers=2, d_model=32, num_heads=2)
    t = resolve_shape(vocab_size=256, seq_len=64, num_layers=3, d_model=32, num_heads=2)
    keys = {lc.shape_key(s, "cpu"), lc.shape_key(t, "cpu"), lc.shape_key(s, "cuda"), lc.shape_key(s, "cpu", 4)}
    assert len(keys) == 4 and lc.shape_key(s, "cpu") == lc.shape_key(s, "cpu", 1)


def test_the_sweep_plan_counts_one_cold_compile_per_step(fixture_corpus, capsys):
    from lab.sweep import compile_plan, pack_plan, plan_jobs, print_plan

    jobs = plan_jobs("batch_lr_smoke", ["data=fixture", "train.compile=on"])
    packs = pack_plan(jobs, workers=2, budget=1e12)
    n, seconds = compile_plan(jobs, packs, device_type="cpu")
    assert n == len(packs) == 2 and seconds == lc.COLD_S + lc.WARM_S  # two packs of one shape and size
    assert compile_plan(jobs, [[j.folder] for j in jobs], "cpu") == (8, lc.COLD_S + 7 * lc.WARM_S)
    auto = plan_jobs("batch_lr_smoke", ["data=fixture"])
    assert compile_plan(auto, pack_plan(auto, workers=2, budget=1e12), "cpu")[0] == 0  # auto: too short to repay
    print_plan("batch_lr_smoke", ["data=fixture"], probe=False)
    out = capsys.readouterr().out
    assert "8 runs in 2 processes" in out and "compile: none (auto:" in out


@pytest.mark.slow
def test_a_compiled_pack_trains_and_marks_the_shared_cache(tmp_path, synthetic_corpus, monkeypatch):
    from lab.pack.train import train_pack
    from tests.conftest import tiny_run

    monkeypatch.setenv(lc.CACHE_ENV, str(tmp_path / "cc"))
    lc.use_cache(tmp_path / "cc")
    cfgs = [tiny_run(tmp_path / f"m{i}", synthetic_corpus, tokens=8 * 2048, seed=i, compile="on") for i in range(2)]
    records = train_pack(cfgs)
    assert all(r["status"] == "completed" and r["compiled"] for r in records)
    assert any((tmp_path / "cc" / "inductor").iterdir()) and len(list((tmp_path / "cc" / "lab-compiled").iterdir())) == 1
