"""Sweeps: grid expansion, every design composes, a real local sweep, idempotent relaunch, failures kept."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab.sweep import SWEEPS, expand_grid, plan_jobs
from lab.runfolder import HOLD_ENV

ROOT = Path(__file__).resolve().parent.parent


def test_expand_grid_is_the_cartesian_product():
    g = expand_grid({"a": "1,2", "b": "range(3)"}, ["c=5"])
    assert len(g) == 6 and all("c=5" in job for job in g)
    assert expand_grid({"a": "1,2"}, ["a=7"]) == [["a=7"]]  # a plain value replaces the axis
    assert expand_grid(None, ["x=1"]) == [["x=1"]]


@pytest.mark.parametrize("design", sorted(p.stem for p in SWEEPS.glob("*.yaml")))
def test_every_design_composes_and_validates(design, fixture_corpus):
    jobs = plan_jobs(design, ["data=fixture"])
    assert len(jobs) >= 4
    for j in jobs:
        cfg, spec = j.cfg, j.spec
        assert cfg.train.threads == 1 and spec.flops > 0 and spec.tokens >= cfg.train.batch_tokens


def test_bad_design_values_fail_before_launch():
    with pytest.raises(ValueError, match="design.size"):
        plan_jobs("smoke", ["design.size=7"])
    with pytest.raises(ValueError, match="widthh"):
        plan_jobs("smoke", ["model.widthh=3"])
    with pytest.raises(ValueError, match="less than half"):
        plan_jobs("smoke", ["design.budget=1e6"])
    long = "{" + ",".join(f"domain_number_{i}:0.1" for i in range(10)) + "}"
    with pytest.raises(ValueError, match="255 a file name.*exclude_keys=.*data.mixture"):
        plan_jobs("smoke", [f"data.mixture={long}"])


def test_a_bad_mixture_fails_before_launch(fixture_corpus):
    with pytest.raises(ValueError, match=r"data.mixture: unknown domain\(s\) \['a'\]"):
        plan_jobs("smoke", ["data=fixture", "data.mixture={a: 0.5}"])
    with pytest.raises(ValueError, match="data.mixture"):
        plan_jobs("smoke", ["data=fixture", "data.mixture={prose_en: 0.5}"])
    assert plan_jobs("smoke", ["data=fixture", "data.mixture=uniform"])


def _sweep(tmp: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAB_SWEEP_PROBE": "0"}
    cmd = [sys.executable, "-m", "lab.sweep", "-cn", "smoke", "-m", f"hydra.sweep.dir={tmp}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_local_smoke_sweep_and_idempotent_relaunch(tmp_path, fixture_corpus):
    out = tmp_path / "smoke"
    p = _sweep(out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 6 and (runs["status"] == "completed").all()
    assert runs["design.budget"].nunique() == 2 and runs["params"].nunique() >= 3
    assert (out / "curves.parquet").exists() and "6 completed" in p.stdout
    walls = {r: json.loads((out / r / "result.json").read_text())["wall_s"] for r in runs["run"]}
    again = _sweep(out)
    assert again.returncode == 0
    assert {r: json.loads((out / r / "result.json").read_text())["wall_s"] for r in runs["run"]} == walls


@pytest.mark.slow
def test_a_packed_sweep_equals_the_unpacked_one(tmp_path, fixture_corpus):
    """batch_lr_smoke packs its same-shape, same-batch runs (packs.json) and launches one job per pack;
    every run folder holds what the same sweep with --no-pack writes, bit for bit (but time and the
    pack size)."""
    env = {**os.environ, "LAB_SWEEP_PROBE": "0"}
    tables = {}
    for flag in ("", "--no-pack"):
        out = tmp_path / (flag or "packed")
        cmd = [sys.executable, "-m", "lab.sweep", "-cn", "batch_lr_smoke", "-m", f"hydra.sweep.dir={out}",
               *([flag] if flag else [])]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        tables[flag] = pd.read_parquet(out / "runs.parquet").set_index("run").sort_index()
        packs = json.loads((out / "packs.json").read_text())["packs"] if (out / "packs.json").exists() else []
        assert (len(packs) == 2 and all(len(p) == 4 for p in packs)) if not flag else not packs
        launched = [d for d in (out / ".submitit").iterdir() if d.name != "%j"]
        assert len(launched) == (2 if not flag else 8)  # the packing sweeper launches only the packs' first jobs
    packed, solo = tables[""], tables["--no-pack"]
    assert (packed["pack_members"] == 4).all() and (solo["pack_members"] == 1).all()
    same = [c for c in solo.columns if c not in ("wall_s", "tokens_per_s", "flops_per_s", "run_dir", "pack_members", "sweep")]
    pd.testing.assert_frame_equal(packed[same], solo[same])


@pytest.mark.slow
def test_failed_and_diverged_runs_are_recorded_and_do_not_stop_the_grid(tmp_path, fixture_corpus):
    out = tmp_path / "bad"
    p = _sweep(out, "design.budget=3e10", "design.size=1", "train.lr=0.01,9.0", "train.grad_clip=0",
               "train.diverge_factor=1.3", "train.warmup=0")
    assert p.returncode == 0, p.stderr[-3000:]
    runs = pd.read_parquet(out / "runs.parquet").set_index("train.lr")
    assert runs.loc[9.0, "status"] == "diverged" and runs.loc[0.01, "status"] == "completed"


def _slurm_up() -> str | None:
    import shutil

    if not shutil.which("scontrol") or not os.environ.get("SLURM_CONF"):
        return "no Slurm cluster (start one with `eval \"$(bash .ci/slurm.sh up)\"`)"
    if subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode != 0:
        return "Slurm controller not answering"
    return None


def _slurm_sweep(out: Path, *overrides: str) -> list[str]:
    """Command line of a smoke sweep through the Slurm launcher (skips when no cluster answers)."""
    why = _slurm_up()
    if why:
        pytest.skip(why)
    return [sys.executable, "-m", "lab.sweep", "-cn", "smoke", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={out}",
            "design.budget=1e11", "train.ckpt_every=10", *overrides]


def _wait_until_gone(job: str, seconds: float = 60) -> None:
    """Until Slurm no longer lists ``job`` as pending or running (the cancel has landed)."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=10)
        if q.returncode != 0 or not q.stdout.strip():
            return
        time.sleep(0.2)
    pytest.fail(f"job {job} still listed {seconds} s after scancel")


def _signal_first_checkpointed_job(args: list[str], out: Path, *scancel_flags: str) -> tuple[subprocess.Popen, Path, str]:
    """Start the sweep; once a job has checkpointed, ``scancel`` it (with flags); wait for the driver.

    Every job holds after its first checkpoint (lab.train's test hook) until the signal has landed:
    a cancelled job is gone from the queue, a preempted (USR2) one has requeued itself and resumed
    (a resumed run never holds). So the signal always finds the job mid-run, however fast it trains.
    """
    import time

    hold = out.parent / f"{out.name}.hold"
    hold.touch()
    env = {**os.environ, "LAB_SWEEP_PROBE": "0", HOLD_ENV: str(hold)}
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, run = time.time() + 120, None
        while run is None and time.time() < deadline and driver.poll() is None:
            run = next((c.parent for c in out.glob("*/ckpt.pt")), None)
            time.sleep(0.05)
        assert run is not None, "no job reached a checkpoint"
        job = json.loads((run / "job.json").read_text())["slurm_job_id"]
        subprocess.run(["scancel", *scancel_flags, job], check=True, timeout=10)
        if not scancel_flags:  # a cancel: release the other jobs once this one is gone
            _wait_until_gone(job)
            hold.unlink()
        log, _ = driver.communicate(timeout=240)
    finally:
        hold.unlink(missing_ok=True)
        if driver.poll() is None:
            driver.kill()
    return driver, run, log


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_sweep_with_a_cancelled_job_resumes_on_relaunch(tmp_path, fixture_corpus):
    """A real Slurm sweep: one job is cancelled mid-run; relaunching resumes it from its checkpoint."""
    out = tmp_path / "slurm"
    args = _slurm_sweep(out, "design.size=0,1")
    _, cancelled, _ = _signal_first_checkpointed_job(args, out)
    assert not (cancelled / "result.json").exists()
    again = subprocess.run(args, cwd=ROOT, env={**os.environ, "LAB_SWEEP_PROBE": "0"}, capture_output=True,
                           text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 2 and (runs["status"] == "completed").all()
    assert json.loads((cancelled / "result.json").read_text())["resumes"] == 1


@pytest.mark.slow
def test_unreachable_slurm_and_empty_grid_are_clear_errors(tmp_path):
    env = {**os.environ, "LAB_SWEEP_PROBE": "0", "SLURM_CONF": str(tmp_path / "none.conf"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "lab.sweep", "-cn", "smoke", "-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "hydra/launcher=slurm" in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.glob("*/result.json"))
    with pytest.raises(ValueError, match="empty"):
        plan_jobs("smoke", ["design.size=range(0)"])


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_preempted_job_requeues_and_resumes(tmp_path, fixture_corpus):
    """Preemption as Slurm delivers it to submitit (USR2): the job requeues itself and resumes."""
    out = tmp_path / "preempt"
    driver, run, log = _signal_first_checkpointed_job(_slurm_sweep(out, "design.size=0"), out, "--signal=USR2")
    assert driver.returncode == 0, log[-3000:]
    res = json.loads((run / "result.json").read_text())
    assert res["status"] == "completed" and res["resumes"] == 1
    assert json.loads((run / "job.json").read_text())["slurm_restart_count"] >= 1


@pytest.mark.slow
def test_design_points_take_batch_and_lr_from_a_fitted_law(tmp_path, fixture_corpus):
    """design.hparams: every IsoFLOP point trains at its budget's B_opt (power-of-two sequences) and lr_opt."""
    from lab.fit.hparams import batch_for, predict_hparams

    law = {"law": "hyperparameter laws (form C)", "B_coef": 0.5, "B_C_exp": 0.33, "lr_coef": 0.3, "lr_C_exp": -0.1}
    path = tmp_path / "law.json"
    path.write_text(json.dumps(law))
    jobs = plan_jobs("isoflop", ["data=fixture", f"design.hparams={path}"])
    by_budget: dict[float, set] = {}
    for j in jobs:
        cfg, spec = j.cfg, j.spec
        C = cfg.design.budget
        b_opt, lr = predict_hparams(law, "C", C=C)
        assert cfg.train.lr == pytest.approx(lr) and cfg.train.batch_tokens == batch_for(b_opt, cfg.data.seq_len)
        assert spec.tags["hparams_law"] == str(path)
        by_budget.setdefault(C, set()).add((cfg.train.batch_tokens, cfg.train.lr))
    assert all(len(v) == 1 for v in by_budget.values()) and len({v.pop() for v in by_budget.values()}) == 3
    kaplan = plan_jobs("kaplan", ["data=fixture", f"design.hparams={path}"])
    assert len({j.cfg.train.lr for j in kaplan}) > 1  # form C evaluated at each point's own C
    path.write_text('{"law": "chinchilla approach 3"}')
    with pytest.raises(ValueError, match="design.hparams: .* is not a fitted batch/LR law"):
        plan_jobs("isoflop", ["data=fixture", f"design.hparams={path}"])
    with pytest.raises(ValueError, match="design.hparams: the batch_lr design sets its own batch and LR"):
        plan_jobs("batch_lr", ["data=fixture", f"design.hparams={path}"])
