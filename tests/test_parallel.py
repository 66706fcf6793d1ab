"""Data parallel under torchrun (gloo on CPU): DDP and FSDP runs equal one process's, and FSDP resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts torchrun process groups (~10-15 s)


def _torchrun(args: list[str], nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lab.train", *args] if nproc > 1 else [sys.executable, "-m", "lab.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_processes_match_one(tmp_path, fixture_corpus):
    """2 gloo processes, same global batch: the same batches, gradients averaged -> the same run."""
    common = ["model=tiny", "data=fixture", "train.tokens=6e4", "train.batch_tokens=2048", "train.micro_batch=4",
              "train.threads=1", "train.progress=false"]
    one = _torchrun(common + [f"run_dir={tmp_path / 'one'}"], 1, tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _torchrun(common + [f"run_dir={tmp_path / 'two'}"], 2, tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "result.json").read_text())
    b = json.loads((tmp_path / "two" / "result.json").read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert b["loss_val"] == pytest.approx(a["loss_val"], rel=1e-5)
    assert b["steps"] == a["steps"] and b["tokens"] == a["tokens"]
    # a batch that cannot be split evenly is refused before compute, naming the field
    bad = _torchrun(["model=tiny", "data=fixture", "train.tokens=6e4", "train.batch_tokens=2048",
                     "train.micro_batch=8", f"run_dir={tmp_path / 'bad'}"], 2, tmp_path)
    assert bad.returncode != 0 and "train.micro_batch" in bad.stderr


def test_fsdp_matches_one_process_and_resumes(tmp_path, fixture_corpus):
    """FSDP (sharded) over 2 processes: same run as one process; its gathered checkpoint resumes it."""
    common = ["model=tiny", "data=fixture", "train.tokens=6e4", "train.batch_tokens=2048", "train.micro_batch=4",
              "train.threads=1", "train.progress=false"]
    one = _torchrun(common + [f"run_dir={tmp_path / 'one'}"], 1, tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    fs = common + ["train.parallel=fsdp", "train.ckpt_every=10", "train.keep_ckpt=true", f"run_dir={tmp_path / 'fs'}"]
    two = _torchrun(fs, 2, tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one" / "result.json").read_text())
    b = json.loads((tmp_path / "fs" / "result.json").read_text())
    assert b["parallel"] == "fsdp" and b["world_size"] == 2
    assert b["loss_val"] == pytest.approx(a["loss_val"], rel=1e-5)
    # drop the record: the run restarts from its last (gathered) checkpoint and ends where it ended
    (tmp_path / "fs" / "result.json").unlink()
    again = _torchrun(fs, 2, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    c = json.loads((tmp_path / "fs" / "result.json").read_text())
    assert c["resumes"] == 1
    assert c["loss_val"] == pytest.approx(b["loss_val"], rel=1e-6)
