"""Faults and bad input, tried as a user on a cluster meets them: each gets one clear line, a truthful
exit status, and nothing is lost (README, "Reliability", lists every case tried here)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lab.io import try_locked
from lab.train import train
from tests.conftest import fake_sweep, tiny_run

ROOT = Path(__file__).resolve().parent.parent
STEPS = 16


@pytest.fixture(scope="module")
def ref(tmp_path_factory, synthetic_corpus) -> tuple[Path, dict]:
    """A completed tiny run that kept its last checkpoint (step 12 of 16) and its record."""
    d = tmp_path_factory.mktemp("ref") / "run"
    r = train(tiny_run(d, synthetic_corpus, tokens=STEPS * 2048, ckpt_every=4, keep_ckpt=True))
    return d, r


def _interrupted(ref: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the reference run as a kill after its last checkpoint leaves it: no result.json."""
    d = tmp_path / "run"
    shutil.copytree(ref[0], d)
    (d / "result.json").unlink()
    return d


def _again(d: Path, corpus) -> dict:
    return train(tiny_run(d, corpus, tokens=STEPS * 2048, ckpt_every=4, keep_ckpt=True))


# ---------------------------------------------------------------------------------- run folders

def test_torn_last_metrics_line_resumes(ref, tmp_path, synthetic_corpus, capsys):
    d = _interrupted(ref, tmp_path)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 13, "tokens": 266')  # a kill in mid-write
    r = _again(d, synthetic_corpus)
    assert r["status"] == "completed" and r["resumes"] == 1 and r["loss_val"] == ref[1]["loss_val"]
    steps = [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    assert "torn or garbage line" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint_is_set_aside_and_the_run_starts_over(ref, tmp_path, synthetic_corpus, capsys, damage):
    d = _interrupted(ref, tmp_path)
    data = (d / "ckpt.pt").read_bytes()
    (d / "ckpt.pt").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    r = _again(d, synthetic_corpus)
    assert r["status"] == "completed" and r["resumes"] == 0 and r["loss_val"] == ref[1]["loss_val"]
    assert len(list(d.glob("ckpt.pt.unreadable-*"))) == 1  # kept for inspection, never deleted
    assert "checkpoint unreadable" in capsys.readouterr().err


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code(ref, tmp_path, synthetic_corpus):
    d = _interrupted(ref, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "optimizer": {}, "state": _Evil(str(marker))}, d / "ckpt.pt")
    r = _again(d, synthetic_corpus)
    assert not marker.exists() and r["status"] == "completed" and r["resumes"] == 0


def test_resume_refuses_a_changed_corpus(tmp_path, lab_home):
    src = tmp_path / "corpus"
    for dom in ("a", "b"):
        (src / dom).mkdir(parents=True)
        for i in range(30):
            words = " ".join(f"w{(i * 7 + k * 13) % 97}{dom}" for k in range(400))
            (src / dom / f"{i}.txt").write_text(words + ".\n")
    run = tmp_path / "run"
    cfg = lambda: tiny_run(run, src, tokens=8 * 2048, ckpt_every=4, keep_ckpt=True)  # noqa: E731
    c = cfg()
    c.data.val_tokens = 512
    train(c)
    (run / "result.json").unlink()
    (src / "a" / "new.txt").write_text("a new file, added while the run was down. " * 50)
    c = cfg()
    c.data.val_tokens = 512
    with pytest.raises(ValueError, match=r"data.corpus: .* changed since .*ckpt.pt"):
        train(c)
    assert json.loads((run / "result.json").read_text())["status"] == "failed"
    assert (run / "ckpt.pt").exists()  # nothing lost: restore the corpus and the run resumes


def test_a_second_trainer_on_a_held_run_folder_moves_on(tmp_path, synthetic_corpus, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with try_locked(run / ".lock") as held:
        assert held
        r = train(tiny_run(run, synthetic_corpus, tokens=4 * 2048))
    assert r["status"] == "busy" and not (run / "result.json").exists()
    assert "being trained by another process" in capsys.readouterr().err
    assert train(tiny_run(run, synthetic_corpus, tokens=4 * 2048))["status"] == "completed"  # lock died with it


def test_a_full_disk_at_a_checkpoint_names_the_file_and_keeps_the_last_one(ref, tmp_path, synthetic_corpus,
                                                                           monkeypatch):
    import lab.checkpoint as ck
    from lab.checkpoint import CheckpointError

    d = _interrupted(ref, tmp_path)
    before = (d / "ckpt.pt").read_bytes()
    (d / "ckpt.pt").unlink()  # start over, so the first checkpoint write is the one that fails

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ck, "atomic_write_bytes", full)
    (d / "ckpt.pt").write_bytes(before)
    # resume from step 12: the next checkpoint would be at 16 = the end, so use a run with one more checkpoint
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*ckpt.pt: No space left on device; "
                                              r"the previous checkpoint is intact"):
        train(tiny_run(d, synthetic_corpus, tokens=STEPS * 2048, ckpt_every=2, keep_ckpt=True))
    assert (d / "ckpt.pt").read_bytes() == before
    assert json.loads((d / "result.json").read_text())["status"] == "failed"


def test_warmup_longer_than_the_run_is_refused(tmp_path, synthetic_corpus):
    with pytest.raises(ValueError, match=r"train.warmup: 1000 steps is not shorter than the run's 24 steps"):
        train(tiny_run(tmp_path / "run", synthetic_corpus, tokens=24 * 2048, warmup=1000))


# ---------------------------------------------------------------------------------- sweeps and tables

def test_a_corrupt_record_is_reported_and_the_rest_of_the_sweep_used(tmp_path):
    from lab.fit.__main__ import main as fit_main
    from lab.results import collect

    sweep = fake_sweep(tmp_path / "s")
    bad = sorted(sweep.glob("*/result.json"))[0]
    bad.write_text('{"status": "completed", "loss_v')
    runs = collect([sweep]).runs
    row = runs[runs["status"] == "corrupt"]
    assert len(row) == 1 and str(bad) in row["error"].iloc[0]
    assert (runs["status"] == "completed").sum() == 14
    assert fit_main(["chinchilla", str(sweep), "--approach", "3", "--bootstrap", "0"]) == 0


def test_reading_a_read_only_sweep_never_writes(tmp_path, monkeypatch):
    import lab.results as R

    sweep = fake_sweep(tmp_path / "s")

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(R, "atomic_write_bytes", read_only)
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(
        OSError(errno.EROFS, "Read-only file system", str(self))))
    assert len(R.collect([sweep]).runs) == 15


def test_garbage_metrics_lines_are_counted(tmp_path):
    from lab.results import collect, summary

    sweep = fake_sweep(tmp_path / "s")
    run = sorted(p.parent for p in sweep.glob("*/result.json"))[0]
    rows = [{"step": s, "loss": 3.0} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\nGARBAGE\n" + json.dumps(rows[1]) + "\n[1]\n"
                                       + json.dumps(rows[2]) + "\n" + '{"step": 4, "lo')
    t = collect([sweep])
    assert len(t.curves) == 3
    r = t.runs.set_index("run").loc[run.name]
    assert r["metrics_bad_lines"] == 2
    assert "2 line(s) that are not JSON" in summary(t.runs)


def test_all_failed_inputs_say_why_no_point_is_left(tmp_path):
    from lab.fit import FitError, load_points

    sweep = tmp_path / "s"
    for i in range(4):
        (sweep / str(i)).mkdir(parents=True)
        (sweep / str(i) / "result.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(FitError, match=r"none of its 4 runs completed \(4 failed\)"):
        load_points(sweep)
    import pandas as pd
    df = pd.DataFrame({"params": [1e3, 2e3], "tokens": [1e6, 2e6], "loss_val": [float("nan")] * 2})
    with pytest.raises(FitError, match=r"no point left to fit .*2 loss_val is NaN"):
        load_points(df)


def test_fit_all_approaches_exits_2_when_no_law_could_be_fitted(tmp_path, capsys):
    from lab.fit.__main__ import main as fit_main

    sweep = fake_sweep(tmp_path / "s")
    for p in sorted(sweep.glob("*/result.json"))[2:]:
        p.unlink()  # 2 runs left: no approach and no Kaplan form can be fitted
    assert fit_main(["chinchilla", str(sweep), "--approach", "all", "--bootstrap", "0"]) == 2
    assert "no chinchilla law could be fitted" in capsys.readouterr().err
    assert fit_main(["kaplan", str(sweep), "--form", "all", "--bootstrap", "0"]) == 2


def test_mixing_law_refuses_a_single_mixture(tmp_path):
    from lab.fit import FitError, fit_mixing_law, load_mixing
    from lab.results import load_runs

    with pytest.raises(FitError, match=r"1 distinct mixture\(s\).*not identifiable"):
        fit_mixing_law(load_mixing(load_runs(fake_sweep(tmp_path / "s"))), bootstrap=0)


def test_sweep_without_multirun_flag_is_refused(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lab.sweep", "-cn", "smoke", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT,
                       env={**os.environ, "LAB_SWEEP_PROBE": "0"}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "add -m" in p.stderr
    assert not list(ROOT.glob("outputs")) or not list(tmp_path.glob("**/result.json"))


@pytest.mark.slow
def test_a_sweep_whose_runs_all_fail_exits_1(tmp_path):
    empty = tmp_path / "empty_corpus"
    empty.mkdir()  # exists, so the plan accepts it; every run then fails to import it
    p = subprocess.run([sys.executable, "-m", "lab.sweep", "-cn", "smoke", "-m", f"hydra.sweep.dir={tmp_path / 's'}",
                        f"data.corpus={empty}", "design.size=0"], cwd=ROOT, env={**os.environ, "LAB_SWEEP_PROBE": "0"},
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 1 and "no run completed (2 failed)" in p.stderr
    assert len(list((tmp_path / "s").glob("*/result.json"))) == 2  # the failures are recorded


def test_a_missing_corpus_is_refused_before_launch(tmp_path):
    from lab.config import RunConfig

    cfg = RunConfig()
    cfg.data.corpus = str(tmp_path / "nope")
    cfg.train.tokens = 1e5
    with pytest.raises(ValueError, match="data.corpus: .* is neither builtin, fixture nor an existing folder"):
        cfg.validate()


def test_sweep_exit_status_when_no_run_completed():
    from lab.sweep import _exit_status

    assert _exit_status({"completed": 0, "failed": 6, "diverged": 0, "running": 0}) == 1
    assert _exit_status({"completed": 1, "failed": 5, "diverged": 0, "running": 0}) == 0
    assert _exit_status({"completed": 0, "failed": 0, "diverged": 2, "running": 0}) == 1
    assert _exit_status(None) == 0


# ---------------------------------------------------------------------------------- recipes

@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    from lab.recipe import write_recipe
    from lab.recipe.build import build_recipe

    d = tmp_path_factory.mktemp("recipe")
    path, _ = write_recipe(build_recipe([str(fake_sweep(d / "s"))], target_flops=1e10, bootstrap=0), d / "r.yaml")
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["train"].update(tokens=r["train"]["tokens"] * 2, steps=r["train"]["steps"] * 2),
     "prediction is for counts.tokens"),
    (lambda r: r["model"].update(num_layers=r["model"]["num_layers"] + 1), "prediction is for counts.params"),
    (lambda r: r["data"].update(mixture={"code_python": 0.7, "multilingual": 0.1, "prose_en": 0.1,
                                         "tech_docs": 0.1}), "not the mixture the recipe was built for"),
    (lambda r: r["train"].update(learning_rate=0.5), "train.learning_rate is not a recipe field"),
])
def test_recipe_edits_that_leave_the_prediction_behind_are_refused(recipe_file, tmp_path, edit, match):
    from lab.recipe import RecipeError, load_recipe

    doc = yaml.safe_load(recipe_file.read_text())
    edit(doc)
    p = tmp_path / "edited.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(RecipeError, match=match):
        load_recipe(p)


def test_backtest_refuses_a_run_not_trained_from_the_recipe(recipe_file, ref, capsys):
    from lab.backtest import main as bt_main

    assert bt_main([str(recipe_file), str(ref[0])]) == 2
    assert "was not trained from" in capsys.readouterr().err


def test_recipe_cli_tables_and_negative_targets(recipe_file, tmp_path, capsys):
    from lab.recipe.__main__ import main as recipe_main

    table = tmp_path / "t.csv"
    table.write_text("params,tokens,loss_val\n1,2,3\n")
    assert recipe_main([str(table), "--target-flops", "1e13"]) == 2
    assert "is a file (a table?), not a sweep folder" in capsys.readouterr().err
    assert recipe_main([str(recipe_file.parent / "s"), "--target-flops", "-1e13"]) == 2
    assert "--target-flops must be a positive number" in capsys.readouterr().err


def test_a_recipe_loads_where_its_corpus_is_absent(recipe_file, tmp_path):
    from lab.recipe import load_recipe

    doc = yaml.safe_load(recipe_file.read_text())
    doc["data"]["corpus"] = "corpora/ours"  # a relative user-corpus folder of another machine
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert load_recipe(p).data.corpus == "corpora/ours"  # back-tests and summaries need no corpus


def test_rounded_mixture_shares_still_sum_to_one():
    from lab.recipe.build import _rounded_shares

    r = _rounded_shares({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3 + 1e-12})
    assert abs(sum(r.values()) - 1) <= 1e-12 and all(abs(v - 1 / 3) < 1e-6 for v in r.values())


def test_launch_never_back_tests_a_run_not_trained_from_the_recipe(recipe_file, ref, tmp_path, capsys):
    from lab.config import RunConfig, TrainConfig
    from lab.train import launch

    d = tmp_path / "run"
    shutil.copytree(ref[0], d)  # a completed run trained from a plain config
    r = launch(RunConfig(recipe=str(recipe_file), run_dir=str(d), train=TrainConfig(tokens=1, progress=False)))
    assert r["status"] == "completed" and "backtest" not in r and not (d / "backtest.json").exists()
    assert "not trained from" in capsys.readouterr().err
