"""A real one-node Slurm cluster (`eval "$(bash .ci/slurm.sh up)"`): a submitit job, a job that dies
hard (noticed through the sacct shim instead of hanging), and a Hydra multirun through
`hydra/launcher=slurm` (conf/hydra/launcher/slurm.yaml). Skipped when no cluster is up. ~30 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UP = 'eval "$(bash .ci/slurm.sh up)"'


def _not_up_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return f"no Slurm: sinfo is not on PATH (start a local cluster with {UP})"
    if not os.environ.get("SLURM_CONF"):
        return f"SLURM_CONF is not set (start or attach with {UP})"
    try:
        # `scontrol ping` fails at once when no controller listens; sinfo would retry for ~9 s.
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
        if ping.returncode != 0:
            said = (ping.stdout.strip().splitlines() or ["nothing"])[0]
            return f"Slurm controller not answering (scontrol ping: {said!r}); run {UP}"
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"scontrol/sinfo failed: {e}"
    if not {"idle", "mixed", "allocated"} & set(p.stdout.split()):
        said = (p.stdout.strip() or p.stderr.strip() or "nothing")[:200]
        return f"Slurm cluster not up (sinfo -h -o %T said {said!r}); run {UP}"
    return None


_REASON = _not_up_reason()
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


def _executor(folder: Path):
    import submitit

    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=2, cpus_per_task=1, mem_gb=1, slurm_signal_delay_s=10)
    return ex


def _wait(job, seconds: float) -> float:
    """Poll job.done() (result pickle every call, sacct on submitit's back-off) until a deadline."""
    t0 = time.monotonic()
    while not job.done():
        if time.monotonic() - t0 > seconds:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {seconds} s (state {job.state}); logs in {job.paths.folder}")
        time.sleep(0.5)
    return time.monotonic() - t0


def test_submitit_job_returns_its_result(tmp_path):
    def square(x):  # nested: cloudpickle ships it by value, the job needs no import of this module
        return x * x, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_CONF")

    job = _executor(tmp_path).submit(square, 7)
    _wait(job, 30)
    value, job_id, conf = job.result()
    assert value == 49 and job_id == job.job_id
    assert conf == os.environ["SLURM_CONF"]  # jobs inherit SLURM_CONF (submitit's in-job requeue needs it)


def test_hard_death_fails_cleanly(tmp_path):
    import submitit

    # The shim must answer submitit's exact query; without it this test would poll forever.
    q = subprocess.run(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", "1"],
                       capture_output=True, text=True, timeout=10)
    assert q.returncode == 0 and q.stdout.startswith("JobID|State|NodeList"), (
        f"sacct does not answer ({q.stderr.strip()!r}): the sacct shim is missing, run {UP}")

    def die():  # no result pickle, like SIGKILL or the OOM killer
        os._exit(3)

    job = _executor(tmp_path).submit(die)
    _wait(job, 45)  # a deadline against hanging, not a speed check
    with pytest.raises(submitit.core.utils.UncompletedJobError, match=r"state: FAILED"):
        job.result()  # waits up to submitit's 15 s for a late result pickle, then raises


APP = '''
import json, os
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="sweep")
def main(cfg):
    out = {"x": cfg.x, "y": cfg.x ** 2, "job": os.environ.get("SLURM_JOB_ID"), "omp": os.environ.get("OMP_NUM_THREADS")}
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "result.json"), "w") as f:
        json.dump(out, f)

if __name__ == "__main__":
    main()
'''


def test_hydra_multirun_through_slurm_launcher(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(APP)
    # The app finds the lab's launcher configs through hydra.searchpath, as a sweep outside conf/ would.
    (tmp_path / "conf" / "sweep.yaml").write_text(textwrap.dedent(f"""\
        defaults:
          - override hydra/launcher: slurm
          - _self_
        x: 0
        hydra:
          searchpath: [file://{ROOT / 'conf'}]
          sweep:
            dir: {tmp_path / 'multirun'}
            subdir: ${{hydra.job.num}}
        """))
    cmd = [sys.executable, "app.py", "-m", "x=1,2,3", "hydra.launcher.timeout_min=5"]
    try:
        p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", "--name", "app"], timeout=10)
        pytest.fail("Hydra multirun through hydra/launcher=slurm did not finish in 120 s")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    results = [json.loads((tmp_path / "multirun" / str(i) / "result.json").read_text()) for i in range(3)]
    assert [(r["x"], r["y"]) for r in results] == [(1, 1), (2, 4), (3, 9)]
    assert all(r["job"] and r["omp"] == "1" for r in results)  # ran as Slurm jobs, with the setup lines
    assert (tmp_path / "multirun" / ".submitit").is_dir()  # submitit_folder under the sweep dir
