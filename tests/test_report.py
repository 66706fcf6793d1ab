"""The HTML report: one self-contained page, what cannot be shown said on it, and a page that
renders in a real browser (headless Chromium, when the machine has it)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fake_sweep
from fakestudy import fake_study
from lab.report.__main__ import main as report_main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def study_report(tmp_path_factory):
    """The page on two synthetic studies (seeds 0 and 1): every section, and their comparison."""
    root = tmp_path_factory.mktemp("studies")
    a, b = fake_study(root / "s0", seed=0), fake_study(root / "s1", seed=1)
    out = root / "report.html"
    assert report_main([str(a), str(b), "--out", str(out), "--bootstrap", "20"]) == 0
    return out


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    fake_sweep(root / "ladder")
    out = root / "report.html"
    assert report_main([str(root / "ladder"), "--out", str(out), "--bootstrap", "20"]) == 0
    return out


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_the_page_is_self_contained_and_embeds_its_figures(sweep_report):
    page = sweep_report.read_text()
    assert "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page), "an external reference"
    imgs = _images(page)
    assert len(imgs) >= 2
    from PIL import Image

    for raw in imgs:
        w, h = Image.open(io.BytesIO(raw)).size
        assert w > 200 and h > 150
    for title in ("Overview", "Loss laws: ladder", "Recipe: ladder", "Provenance: ladder"):
        assert f">{title}</h2>" in page
    assert "verdict-" in page and "95% interval" in page


def test_a_study_page_shows_every_stage_with_intervals_and_verdicts(study_report):
    page = study_report.read_text()
    for title in ("Comparing ladders: s1 over s0", "Hyperparameters: s0", "Mixture: s0", "Loss laws: s0",
                  "Recipe: s0", "Back-test: s0", "Provenance: s0", "Back-test: s1"):
        assert f">{title}</h2>" in page, title
    assert "section not shown" not in page and "no comparison" not in page
    assert "The law stages b-d used" in page and "Mixing law constants" in page and "Stage b chose" in page
    assert "(±" in page                          # every interval with its width
    assert "effective compute multiplier" in page.lower()
    assert len(_images(page)) >= 12


@pytest.mark.parametrize("kwargs, missing", [
    ({"partial": True}, "stage recipe: not run: no recipe"),
    ({"stages_done": "ab", "failed_stage": "loss"}, "stage loss: failed"),
    ({"failed_runs": 2}, "runs not completed (2 failed)"),
])
def test_an_unfinished_or_partly_failed_study_says_what_is_missing(tmp_path, kwargs, missing):
    study = fake_study(tmp_path / "s", **kwargs)
    out = tmp_path / "r.html"
    assert report_main([str(study), "--out", str(out), "--bootstrap", "0"]) == 0
    page = out.read_text()
    assert missing in page
    assert "section not shown" not in page and "Traceback" not in page


def test_a_moved_study_is_read_from_where_it_now_is(tmp_path):
    study = fake_study(tmp_path / "there", partial=True)
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(study, moved)
    shutil.rmtree(study)                        # study.json still names the old, absolute paths
    from lab.report.sources import open_source

    src = open_source(moved)
    assert set(src.sweeps) == {"hparams", "mixture", "loss"}
    assert all(str(moved) in d for ds in src.sweeps.values() for d in ds)


def test_a_damaged_study_record_is_bad_input(tmp_path, capsys):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text("{not json")
    assert report_main([str(tmp_path / "s"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "study.json: unreadable" in err and len(err.strip().splitlines()) == 1


def test_a_partly_failed_sweep_is_reported_with_its_failures(tmp_path):
    sweep = fake_sweep(tmp_path / "ladder")
    bad = sorted(sweep.iterdir())[0]
    (bad / "result.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    out = tmp_path / "r.html"
    assert report_main([str(sweep), "--out", str(out), "--bootstrap", "0"]) == 0
    page = out.read_text()
    assert "1 of 15 runs not completed (1 failed)" in page
    assert "out of memory" in page          # the provenance table names the failure


def test_out_must_be_a_file(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "ladder")
    assert report_main([str(sweep), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "nothing to report" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_importing_the_plots_never_changes_the_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import lab.plots, lab.plots.compare, lab.report.build; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def chromium_render(page: Path, shot: Path, tmp: Path) -> tuple[str, str]:
    """Screenshot ``page`` in headless Chromium; (stderr log, the DOM after load)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = page.resolve().as_uri()
    shotrun = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
                             capture_output=True, text=True, timeout=120)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return shotrun.stderr + dom.stderr, dom.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium_without_console_errors(study_report, tmp_path):
    shot = tmp_path / "shot.png"
    log, dom = chromium_render(study_report, shot, tmp_path)
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "Failed to load" in ln]
    assert not console, console
    assert dom.count("<img") == len(_images(study_report.read_text())) and "Loss laws" in dom
    from PIL import Image, ImageStat

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    assert ImageStat.Stat(img).stddev[0] > 10, "a blank screenshot"
    if os.environ.get("LAB_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LAB_KEEP_SCREENSHOT"])
