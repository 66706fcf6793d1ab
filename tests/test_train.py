"""The trainer: a pulse run writes a complete record; learning; resume-after-kill; failure records."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lab.runfolder import HOLD_ENV
from lab.train import train
from tests.conftest import tiny_run

ROOT = Path(__file__).resolve().parent.parent
RESULT_KEYS = {
    "status", "params", "params_total", "tokens", "flops", "loss_val", "bpb_val", "loss_val_domains",
    "bpb_val_domains", "lr", "batch_tokens", "wall_s", "tokens_per_s", "mixture", "param_groups",
}


def test_pulse_run_writes_complete_record(tmp_path, synthetic_corpus):
    r = train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=16 * 2048))
    assert RESULT_KEYS <= set(r) and r["status"] == "completed"
    assert r["tokens"] == 16 * 2048 and r["flops"] == pytest.approx(r["tokens"] * r["flops_per_token"])
    assert set(r["loss_val_domains"]) == {"a", "b", "c"}
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["loss_val"] == r["loss_val"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 17))
    assert "loss_val" in rows[-1] and "loss_val_a" in rows[-1]
    assert (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "ckpt.pt").exists()
    # byte tokenizer: bits per byte is loss / ln 2
    assert r["bpb_val"] == pytest.approx(r["loss_val"] / math.log(2), rel=1e-6)
    # a completed run is not run again
    assert train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=16 * 2048))["wall_s"] == r["wall_s"]


def test_flop_budget_is_honoured_within_half_a_batch(tmp_path, synthetic_corpus):
    cfg = tiny_run(tmp_path / "run", synthetic_corpus, tokens=None, flops=3e9)
    r = train(cfg)
    assert abs(r["flops"] - 3e9) <= 0.5 * r["batch_tokens"] * r["flops_per_token"]


def test_bad_budget_fails_before_compute(tmp_path, synthetic_corpus):
    with pytest.raises(ValueError, match="train.tokens"):
        train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=100))
    rec = json.loads((tmp_path / "run" / "result.json").read_text())
    assert rec["status"] == "failed" and "train.tokens" in rec["error"]


def test_unknown_mixture_domain_fails_clearly(tmp_path, synthetic_corpus):
    cfg = tiny_run(tmp_path / "run", synthetic_corpus)
    cfg.data.mixture = {"a": 0.5, "prose": 0.5}
    with pytest.raises(ValueError, match=r"unknown domain.*known domains"):
        train(cfg)


def test_divergence_is_recorded(tmp_path, synthetic_corpus):
    r = train(tiny_run(tmp_path / "run", synthetic_corpus, lr=8.0, grad_clip=0.0, warmup=0, diverge_factor=1.05))
    assert r["status"] == "diverged" and "loss" in r["error"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_resume_after_kill_matches_unbroken_run(tmp_path, synthetic_corpus):
    """SIGKILL a CLI run after a checkpoint; relaunching ends with the unbroken run's exact result."""
    steps = 160
    args = [
        sys.executable, "-m", "lab.train", "model=tiny", f"data.corpus={synthetic_corpus}", "data.seq_len=64",
        "data.val_tokens=4096", f"train.tokens={steps * 1024}", "train.batch_tokens=1024", "train.ckpt_every=10",
        "train.progress=false", "train.threads=1", "train.lr=0.003",
    ]
    killed, hold = tmp_path / "killed", tmp_path / "hold"
    hold.touch()  # the run waits after its first checkpoint while this file exists (lab.train's test hook)
    proc = subprocess.Popen(args + [f"run_dir={killed}"], cwd=ROOT, env={**os.environ, HOLD_ENV: str(hold)})
    deadline = time.time() + 120
    while not (killed / "ckpt.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hold.unlink()
    assert (killed / "ckpt.pt").exists() and not (killed / "result.json").exists()
    subprocess.run(args + [f"run_dir={killed}"], cwd=ROOT, check=True)
    resumed = json.loads((killed / "result.json").read_text())
    assert resumed["resumes"] == 1

    cfg = tiny_run(tmp_path / "unbroken", synthetic_corpus, tokens=steps * 1024, batch_tokens=1024, lr=0.003)
    unbroken = train(cfg)
    assert resumed["loss_val"] == unbroken["loss_val"]
    assert resumed["loss_val_domains"] == unbroken["loss_val_domains"]
    rows = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) and rows[-1] == steps  # no duplicated or lost metric rows


@pytest.mark.slow
def test_tiny_proxy_learns_real_text(tmp_path, fixture_corpus):
    """A few hundred steps on the fixture slice end well below the unigram entropy of its data."""
    from lab.config import DataConfig
    from lab.data import load_corpus

    corpus = load_corpus(DataConfig(corpus=fixture_corpus), progress=False)
    counts = np.zeros(256)
    for d in corpus.domains.values():
        counts += np.bincount(np.asarray(d.train), minlength=256)[:256]
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    r = train(tiny_run(tmp_path / "run", fixture_corpus, tokens=300 * 2048, lr=1e-2))
    assert r["status"] == "completed"
    assert r["loss_val"] < unigram - 0.6, (r["loss_val"], unigram)


def test_wsd_cooldown_branch_equals_a_standalone_run(tmp_path, synthetic_corpus):
    """A branch decaying to D_i ends exactly where a WSD run of D_i tokens ends (same batches, same LR)."""
    from lab.results import collect

    kw = dict(schedule="wsd", warmup=4, decay=0.25, min_lr_ratio=0.0)
    long = train(tiny_run(tmp_path / "sweep" / "long", synthetic_corpus, tokens=48 * 2048, cooldowns=[16 * 2048, 32 * 2048], **kw))
    assert [b["tokens"] for b in long["cooldowns"]] == [16 * 2048, 32 * 2048]
    short = train(tiny_run(tmp_path / "short", synthetic_corpus, tokens=16 * 2048, **kw))
    assert long["cooldowns"][0]["loss_val"] == short["loss_val"]
    # the main run is unaffected by its branches
    plain = train(tiny_run(tmp_path / "plain", synthetic_corpus, tokens=48 * 2048, **kw))
    assert plain["loss_val"] == long["loss_val"]
    runs = collect([tmp_path / "sweep"]).runs
    assert list(runs["cooldown"]) == [True, True, False]
    assert list(runs["tokens"]) == [16 * 2048, 32 * 2048, 48 * 2048]
    assert runs["branch_flops"].iloc[0] > 0 and runs["loss_val"].notna().all()


def test_cooldowns_need_wsd_and_the_stable_phase(tmp_path, synthetic_corpus):
    with pytest.raises(ValueError, match="train.cooldowns"):
        train(tiny_run(tmp_path / "a", synthetic_corpus, cooldowns=[1e4]))
    with pytest.raises(ValueError, match="stable phase"):
        train(tiny_run(tmp_path / "b", synthetic_corpus, schedule="wsd", tokens=16 * 2048, cooldowns=[20 * 2048]))


def test_optional_metric_streams(tmp_path, synthetic_corpus):
    """TensorBoard event files and an offline W&B run appear when enabled; nothing when not."""
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install '.[track]')")
    pytest.importorskip("wandb", reason="wandb not installed (pip install '.[track]')")
    r = train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=4 * 2048, tensorboard=True, wandb=True))
    assert r["status"] == "completed"
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    ev.Reload()
    assert len(ev.Scalars("loss")) == 4 and "loss_val" in ev.Tags()["scalars"]


def test_gradient_noise_scale_is_logged(tmp_path, fixture_corpus):
    from lab.train import train

    r = train(tiny_run(tmp_path / "g", fixture_corpus, tokens=40 * 2048, micro_batch=8, gns=True))
    assert r["gns_B_noise"] is not None and 0 < r["gns_B_noise"] < 1e9
    rows = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert all("gns_B_noise" in row for row in rows)
    with pytest.raises(ValueError, match="train.gns"):
        train(tiny_run(tmp_path / "h", fixture_corpus, gns=True))   # one micro-batch per step
