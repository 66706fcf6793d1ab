"""Packed proxies: a member computes its solo run's bits; a pack writes each member's own run folder;
resume, divergence, failure and the grouping of a sweep's runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lab.config import ModelConfig
from lab.counting import resolve_shape, shape_from_config
from lab.model import Transformer
from lab.pack.grouping import Item, group_runs, pack_micro
from lab.pack.model import PackedTransformer
from lab.pack.train import train_pack
from lab.runfolder import HOLD_ENV
from lab.train import train
from tests.conftest import tiny_run

ROOT = Path(__file__).resolve().parent.parent
# what may differ between a packed member's record and its solo run's: time, where, how
RUNTIME_KEYS = {"wall_s", "tokens_per_s", "flops_per_s", "run_dir", "pack_members"}


def _shape(**kw):
    cfg = ModelConfig(**{"depth": 2, "aspect": 16, "head_dim": 16, **kw})
    return shape_from_config(cfg, vocab_size=256, seq_len=32), cfg


@pytest.mark.parametrize("kernels", [True, False], ids=["lab kernels", "torch ops"])
@pytest.mark.parametrize("kw", [{}, {"kv_ratio": 2}, {"tie_embeddings": True}])
def test_a_member_computes_its_solo_models_bits(kw, kernels, monkeypatch):
    """Both with the lab's CPU kernels and with torch's ops (what a GPU runs)."""
    if not kernels:
        monkeypatch.setattr("lab.model._kernel_usable", lambda *a: False)
        monkeypatch.setattr("lab.model._rowops_usable", lambda *a: False)
    shape, cfg = _shape(**kw)
    seeds = [0, 3, 7]
    pack = PackedTransformer.from_seeds(shape, seeds, cfg)
    x = torch.randint(0, 256, (3, 4, 33))
    losses = pack(x[..., :-1], x[..., 1:])
    losses.sum().backward()
    packed = dict(pack.named_parameters())
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        solo = Transformer(shape, cfg)
        loss = solo(x[k, :, :-1], x[k, :, 1:])
        loss.backward()
        assert torch.equal(losses[k], loss)
        grads = dict(solo.named_parameters())
        for name, solo_name in pack.solo_names().items():
            assert torch.equal(packed[name].grad[k], grads[solo_name].grad), name


def test_member_view_shares_the_packs_storage():
    shape, cfg = _shape()
    pack = PackedTransformer.from_seeds(shape, [0, 1], cfg)
    view = pack.member_view(1)
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(view.state_dict().values(), Transformer(shape, cfg).state_dict().values()))
    with torch.no_grad():
        view.norm.weight.fill_(2.0)
    assert torch.equal(pack.norm[1], torch.full_like(pack.norm[1], 2.0)) and not torch.equal(pack.norm[0], pack.norm[1])
    sub = pack.select([1])
    assert sub.members == 1 and torch.equal(sub.norm[0], pack.norm[1])


def _rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = run / name
    drop = {"tokens_per_s", "elapsed_s"}
    return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()] \
        if path.exists() else []


def _same_run(packed: Path, solo: Path) -> None:
    """Bit for bit the same metrics, cooldown rows and record (but time and place)."""
    assert _rows(packed) == _rows(solo)
    assert _rows(packed, "cooldowns.jsonl") == _rows(solo, "cooldowns.jsonl")
    a, b = (json.loads((r / "result.json").read_text()) for r in (packed, solo))
    for rec in (a, b):
        for c in rec["cooldowns"]:
            c.pop("tokens_per_s", None), c.pop("elapsed_s", None)
    assert {k: v for k, v in a.items() if k not in RUNTIME_KEYS} == {k: v for k, v in b.items() if k not in RUNTIME_KEYS}


MEMBERS = {  # what a sweep varies between runs of one shape and one batch
    "base": {},
    "lr_seed": {"lr": 1e-2, "seed": 1, "grad_clip": 0.5, "weight_decay": 0.0},
    "wsd": {"schedule": "wsd", "warmup": 4, "decay": 0.25, "cooldowns": [16 * 1024, 28 * 1024], "seed": 2},
    "short": {"tokens": 20 * 1024, "eval_every": 5, "beta2": 0.99},
}


def _member(root: Path, corpus, name: str, **over):
    kw = {"tokens": 40 * 1024, "batch_tokens": 1024, "log_every": 1, "eval_every": 8, **MEMBERS.get(name, {}), **over}
    cfg = tiny_run(root / name, corpus, **kw)
    if name == "lr_seed":
        cfg.data.mixture = {"a": 0.6, "b": 0.3, "c": 0.1}
        cfg.data.val_weights = "uniform"
    return cfg


def test_a_pack_trains_each_member_as_its_solo_run(tmp_path, synthetic_corpus):
    """LR, schedule, seed, mixture, AdamW settings, budget and cooldown branches differ per member; each
    member's metrics, branches and record equal its solo run's exactly; the short member leaves early."""
    cfgs = [_member(tmp_path / "pack", synthetic_corpus, n) for n in MEMBERS]
    records = train_pack(cfgs)
    assert [r["status"] for r in records] == ["completed"] * 4 and all(r["pack_members"] == 4 for r in records)
    for n in MEMBERS:
        solo = train(_member(tmp_path / "solo", synthetic_corpus, n))
        assert solo["pack_members"] == 1
        _same_run(tmp_path / "pack" / n, tmp_path / "solo" / n)
    assert len(_rows(tmp_path / "pack" / "wsd", "cooldowns.jsonl")) == 2
    assert not any((tmp_path / "pack" / n / "ckpt.pt").exists() for n in MEMBERS)
    # done runs are not trained again; a pack of done runs returns their records
    again = train_pack(cfgs)
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in records]


def test_larger_batches_accumulate_finer_micro_batches(tmp_path, synthetic_corpus):
    """Members of different batch sizes share the smallest micro-batch: the same sequences, summed in
    another grouping, so equal to float rounding (1e-5 relative), not bit for bit."""
    cfgs = [_member(tmp_path / "pack", synthetic_corpus, f"b{b}", batch_tokens=b, tokens=16 * 4096)
            for b in (1024, 2048, 4096)]
    train_pack(cfgs)
    for b in (1024, 2048, 4096):
        train(_member(tmp_path / "solo", synthetic_corpus, f"b{b}", batch_tokens=b, tokens=16 * 4096))
        packed, solo = _rows(tmp_path / "pack" / f"b{b}"), _rows(tmp_path / "solo" / f"b{b}")
        assert [r["step"] for r in packed] == [r["step"] for r in solo]
        for p, s in zip(packed, solo):
            for key in ("loss", "grad_norm", "loss_val"):
                if key in s:
                    assert p[key] == pytest.approx(s[key], rel=1e-5), (b, key, p["step"])


def test_a_diverged_member_leaves_and_the_rest_go_on(tmp_path, synthetic_corpus):
    hot = _member(tmp_path / "pack", synthetic_corpus, "hot", lr=8.0, grad_clip=0.0, warmup=0, diverge_factor=1.05)
    ok = _member(tmp_path / "pack", synthetic_corpus, "base")
    a, b = train_pack([hot, ok])
    assert a["status"] == "diverged" and "loss" in a["error"] and b["status"] == "completed"
    train(_member(tmp_path / "solo", synthetic_corpus, "base"))
    _same_run(tmp_path / "pack" / "base", tmp_path / "solo" / "base")
    solo_hot = train(_member(tmp_path / "solo", synthetic_corpus, "hot", lr=8.0, grad_clip=0.0, warmup=0,
                             diverge_factor=1.05))
    assert solo_hot["status"] == "diverged" and solo_hot["steps"] == a["steps"]


def test_runs_that_cannot_share_a_pack_are_refused_before_training(tmp_path, synthetic_corpus):
    a = _member(tmp_path, synthetic_corpus, "a")
    b = _member(tmp_path, synthetic_corpus, "b")
    b.model.depth = 3
    with pytest.raises(ValueError, match="model: .* cannot share a pack .* shape"):
        train_pack([a, b])
    c = _member(tmp_path, synthetic_corpus, "c")
    c.data.val_tokens = 2048
    with pytest.raises(ValueError, match="data.val_tokens: .* cannot share a pack"):
        train_pack([a, c])
    d = _member(tmp_path, synthetic_corpus, "d", gns=True, micro_batch=2)
    with pytest.raises(ValueError, match="train.gns"):
        train_pack([a, d])
    for name in "abcd":  # each refusal is recorded, never lost
        assert json.loads((tmp_path / name / "result.json").read_text())["status"] == "failed"


def test_a_bad_member_fails_the_pack_and_every_member_is_recorded(tmp_path, synthetic_corpus):
    good = _member(tmp_path, synthetic_corpus, "good")
    bad = _member(tmp_path, synthetic_corpus, "bad", schedule="wsd", cooldowns=[1e9])
    with pytest.raises(ValueError, match="train.cooldowns"):
        train_pack([good, bad])
    for name in ("good", "bad"):
        rec = json.loads((tmp_path / name / "result.json").read_text())
        assert rec["status"] == "failed" and "train.cooldowns" in rec["error"]


_KILLED_PACK = """
import sys
from tests.test_pack import _member
from lab.pack.train import train_pack
train_pack([_member(__import__("pathlib").Path(sys.argv[1]), sys.argv[2], n, ckpt_every=int(sys.argv[3]))
            for n in ("base", "lr_seed", "wsd")])
"""


def test_a_killed_pack_resumes_every_member_and_solo_resumes_a_member(tmp_path, synthetic_corpus):
    """SIGKILL a pack after its first checkpoints; train_pack resumes all members, and a member's packed
    checkpoint also resumes solo; every run ends with its unbroken solo run's exact metrics."""
    hold = tmp_path / "hold"
    hold.touch()  # members wait after their first checkpoint while this file exists (the test hook)
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PACK, str(root), str(synthetic_corpus), "10"], cwd=ROOT,
                            env={**os.environ, HOLD_ENV: str(hold)})
    deadline = time.time() + 120
    members = [root / n / "ckpt.pt" for n in ("base", "lr_seed", "wsd")]
    while not all(c.exists() for c in members) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the pack holds once every member due has written its checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hold.unlink()
    assert (root / "base" / "ckpt.pt").exists() and not (root / "base" / "result.json").exists()
    ckpt_step = torch.load(root / "base" / "ckpt.pt", weights_only=True)["state"]["step"]
    assert 0 < ckpt_step < 40
    solo = train(_member(root, synthetic_corpus, "lr_seed", ckpt_every=10))  # one member resumes alone
    packed = train_pack([_member(root, synthetic_corpus, n, ckpt_every=10) for n in ("base", "lr_seed", "wsd")])
    assert solo["resumes"] == 1 and [r["resumes"] for r in packed] == [1, 1, 1]
    for n in ("base", "lr_seed", "wsd"):
        train(_member(tmp_path / "unbroken", synthetic_corpus, n, ckpt_every=10))
        killed, unbroken = _rows(root / n), _rows(tmp_path / "unbroken" / n)
        assert [r["step"] for r in killed] == list(range(1, 41))  # no duplicated or lost rows
        assert killed == unbroken
        assert _rows(root / n, "cooldowns.jsonl") == _rows(tmp_path / "unbroken" / n, "cooldowns.jsonl")


def test_a_busy_member_is_skipped(tmp_path, synthetic_corpus):
    from lab.io import try_locked

    a, b = (_member(tmp_path, synthetic_corpus, n, tokens=8 * 1024) for n in ("a", "b"))
    (tmp_path / "b").mkdir(parents=True)
    with try_locked(tmp_path / "b" / ".lock") as held:
        assert held
        ra, rb = train_pack([a, b])
    assert ra["status"] == "completed" and rb["status"] == "busy" and not (tmp_path / "b" / "result.json").exists()


# ---- grouping ----------------------------------------------------------------------------------


def test_group_runs_packs_by_key_within_limits_and_feeds_every_worker():
    items = [Item(f"a{i}", "A", 1.0, 3) for i in range(7)] + [Item("solo", None, 5.0, 16), Item("b0", "B", 2.0, 16)]
    packs = group_runs(items, workers=2)
    assert sorted(sum(packs, [])) == sorted(i.id for i in items)  # every run exactly once
    assert ["solo"] in packs and ["b0"] in packs
    assert all(len(p) <= 3 for p in packs if p[0].startswith("a")) and len([p for p in packs if p[0].startswith("a")]) == 3
    assert group_runs(items, workers=2) == packs  # deterministic
    # few runs, many workers: split until every worker has a pack
    assert len(group_runs([Item(i, "A", 1.0, 16) for i in range(4)], workers=2)) == 2
    assert len(group_runs([Item(i, "A", 1.0, 16) for i in range(4)], workers=8)) == 4


def test_group_runs_splits_a_pack_that_would_leave_cores_idle():
    """Three sizes x 13 mixtures (compute 1:3:7 per run) on 2 workers: one pack per size would leave a
    core idle while the largest finishes; the largest is split until the worst order is near even."""
    from lab.pack.grouping import BALANCE, _worst_finish

    items = [Item(f"s{s}m{m}", s, w, 16) for s, w in ((0, 1.0), (1, 3.0), (2, 7.0)) for m in range(13)]
    packs = group_runs(items, workers=2)
    work = {i.id: i.flops for i in items}
    works = [sum(work[x] for x in p) for p in packs]
    assert len(packs) > 3 and _worst_finish(works, 2) <= BALANCE * sum(works) / 2
    assert all(len({x[:2] for x in p}) == 1 for p in packs)  # still one size per pack
    # equal runs that divide evenly stay in as few packs as workers
    assert [len(p) for p in group_runs([Item(i, "A", 1.0, 16) for i in range(8)], workers=2)] == [4, 4]


def test_pack_micro_divides_every_members_micro_batch_within_memory():
    shape = resolve_shape(vocab_size=256, seq_len=256, num_layers=2, d_model=64, num_heads=2)
    assert pack_micro([8, 16, 32], 4, shape, 1e12) == 8
    assert pack_micro([6, 4], 2, shape, 1e12) == 2
    small = pack_micro([32], 16, shape, 16 * 4 * 256 * 64 * 1000)  # a budget that fits only a few sequences
    assert 1 <= small < 32 and 32 % small == 0
