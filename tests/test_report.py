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
from lab.report.__main__ import main as report_main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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


def test_a_partly_failed_sweep_is_reported_with_its_failures(tmp_path):
    sweep = fake_sweep(tmp_path / "ladder")
    bad = sorted(sweep.iterdir())[0]
    (bad / "result.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    out = tmp_path / "r.html"
    assert report_main([str(sweep), "--out", str(out), "--bootstrap", "0"]) == 0
    page = out.read_text()
    assert "1 of 15 runs not completed (1 failed)" in page
    assert "out of memory" in page          # the provenance table names the failure


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
def test_the_page_renders_in_headless_chromium_without_console_errors(sweep_report, tmp_path):
    shot = tmp_path / "shot.png"
    log, dom = chromium_render(sweep_report, shot, tmp_path)
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln or "Uncaught" in ln or "Failed to load" in ln]
    assert not console, console
    assert dom.count("<img") == len(_images(sweep_report.read_text())) and "Loss laws" in dom
    from PIL import Image, ImageStat

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    assert ImageStat.Stat(img).stddev[0] > 10, "a blank screenshot"
    if os.environ.get("LAB_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LAB_KEEP_SCREENSHOT"])
