"""Results tables from run folders: completed, failed, diverged, partial; incremental; concurrent."""

import json
import multiprocessing as mp
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lab.io import atomic_write_json, atomic_write_text
from lab.results import collect, main, save_table


def fake_run(d: Path, i: int, status: str | None = "completed", steps: int = 3) -> None:
    """A run folder shaped like lab.train's (config.yaml, metrics.jsonl, result.json)."""
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"config": {"model": {"depth": i + 1}, "train": {"lr": 1e-3 * (i + 1), "tokens": 1e5}}, "derived": {"steps": steps}}
    atomic_write_text(d / "config.yaml", yaml.safe_dump(cfg))
    rows = [{"step": s, "tokens": 1024.0 * s, "flops": 1e6 * s, "loss": 5.0 - s * 0.1, "lr": 1e-3} for s in range(1, steps + 1)]
    rows[-1].update({"loss_val": 4.0, "loss_val_a": 3.9, "loss_val_b": 4.1})
    atomic_write_text(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if status is None:
        return
    res = {
        "status": status, "error": None if status == "completed" else "boom", "params": 1000 * (i + 1),
        "params_total": 2000 * (i + 1), "tokens": 1e5, "flops": 6e8 * (i + 1), "batch_tokens": 1024, "lr": 1e-3,
        "schedule": "cosine", "loss_val": 4.0 - 0.1 * i, "bpb_val": 5.0, "mixture": {"a": 0.5, "b": 0.5},
        "loss_val_domains": {"a": 3.9, "b": 4.1}, "bpb_val_domains": {"a": 5.6, "b": 5.9},
        "param_groups": {"mlp": 10}, "wall_s": 1.0, "tokens_per_s": 1e5, "tags": {"design": "test"},
    }
    atomic_write_json(d / "result.json", res)


def test_runs_and_curves_tables(tmp_path):
    sweep = tmp_path / "sweepA"
    fake_run(sweep / "0", 0)
    fake_run(sweep / "1", 1, status="failed")
    fake_run(sweep / "2", 2, status="diverged")
    fake_run(sweep / "3", 3, status=None)  # killed before it wrote a result
    (sweep / "0" / ".hydra").mkdir()
    (sweep / "0" / ".hydra" / "config.yaml").write_text("hydra: {}\n")  # not a run
    t = collect([sweep])
    runs = t.runs.set_index("run")
    assert list(runs.index) == ["0", "1", "2", "3"]
    assert runs.loc["0", "status"] == "completed" and runs.loc["3", "status"] == "incomplete"
    assert runs.loc["1", "error"] == "boom"
    assert runs.loc["0", "mix_a"] == 0.5 and runs.loc["0", "loss_val_b"] == 4.1 and runs.loc["0", "bpb_val_a"] == 5.6
    assert runs.loc["2", "model.depth"] == 3 and runs.loc["2", "train.lr"] == pytest.approx(3e-3)
    assert runs.loc["0", "design"] == "test" and runs.loc["0", "params_mlp"] == 10
    assert set(t.runs["sweep"]) == {"sweepA"}
    assert len(t.curves) == 12 and t.curves["loss_val_a"].notna().sum() == 4


def test_incremental_and_saved(tmp_path):
    sweep = tmp_path / "s"
    for i in range(3):
        fake_run(sweep / str(i), i)
    first = collect([sweep]).runs
    assert (sweep / ".lab" / "runs.parquet").exists()
    fake_run(sweep / "3", 3)
    time.sleep(0.01)
    second = collect([sweep]).runs
    assert len(second) == 4
    pd.testing.assert_frame_equal(second.iloc[:3][first.columns].reset_index(drop=True), first, check_dtype=False)
    out = save_table(second, tmp_path / "runs.parquet")
    assert len(pd.read_parquet(out)) == 4
    assert main([str(sweep), "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
    assert len(pd.read_csv(tmp_path / "r.csv")) == 4
    assert main([str(tmp_path / "nope")]) == 2


def _writer(sweep: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        fake_run(Path(sweep) / str(i), i)


def test_concurrent_writers_lose_no_rows(tmp_path):
    """Runs finishing while tables are collected: every read is consistent, the final read is complete."""
    sweep = tmp_path / "busy"
    sweep.mkdir()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(sweep), k * 20, 20)) for k in range(3)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):
        runs = collect([sweep]).runs
        if len(runs):  # a row is either complete or marked incomplete, never garbage
            assert set(runs["status"]) <= {"completed", "incomplete"}
            done = runs[runs["status"] == "completed"]
            assert done.empty or done["loss_val"].notna().all()  # (no column yet while nothing has completed)
    for p in procs:
        p.join()
    runs = collect([sweep]).runs
    assert len(runs) == 60 and (runs["status"] == "completed").all()
    assert len(collect([sweep], use_cache=False).runs) == 60


def test_two_sweeps_and_real_run(tmp_path, synthetic_corpus):
    from lab.train import train
    from tests.conftest import tiny_run

    train(tiny_run(tmp_path / "real" / "r0", synthetic_corpus, tokens=4 * 2048))
    fake_run(tmp_path / "other" / "x", 0)
    t = collect([tmp_path / "real", tmp_path / "other"])
    assert set(t.runs["sweep"]) == {"real", "other"}
    real = t.runs[t.runs["sweep"] == "real"].iloc[0]
    assert real["status"] == "completed" and real["model.depth"] == 2 and real["loss_val_a"] > 0
    assert {"step", "tokens", "flops", "loss", "lr"} <= set(t.curves.columns)
