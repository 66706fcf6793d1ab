"""The analysis notebooks (``analysis/*.py``, jupytext percent scripts): each parses, starts with a
``parameters`` cell and imports only the lab, numpy, pandas, matplotlib and the standard library
(fast); each runs end to end on a synthetic study (:func:`fakestudy.fake_study`), and the loss-law and
recipe notebooks on an unfinished study and an empty folder, printing what is missing instead of
raising (slow: a kernel and the real fits, 10-40 s a notebook).
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import pytest

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"
NOTEBOOKS = sorted(ANALYSIS.glob("*.py"))
ALLOWED = {"lab", "numpy", "pandas", "matplotlib"}
BOOTSTRAP = 20


def _read(path: Path):
    jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed (pip install -e '.[analysis]')")
    return jupytext.read(path)


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_expected_notebooks_are_there():
    names = {p.stem for p in NOTEBOOKS}
    assert {"loss_laws", "hparams", "mixing", "recipe_backtest", "compare_ladders"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_parses_starts_with_parameters_and_imports_only_the_lab_stack(path):
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:\n#   jupytext:"), "no jupytext header"
    nb = _read(path)
    code = _code(nb)
    assert code and "parameters" in code[0].metadata.get("tags", []), "the first code cell is not tagged parameters"
    params = ast.parse(code[0].source)
    names = {t.id for s in params.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}
    assert "BOOTSTRAP" in names, names
    assert all(isinstance(s, (ast.Assign, ast.Expr)) for s in params.body), "parameters: plain assignments only"
    assert any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        src = cell.source
        assert "matplotlib.use" not in src and "%matplotlib" not in src, "the backend is the user's choice"
        tree = ast.parse(src)  # no magics: the notebook is plain Python
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for m in mods:
                top = m.split(".")[0]
                assert top in ALLOWED or top in sys.stdlib_module_names, f"imports {m}"


# ------------------------------------------------------------------------------------------------
# executing the notebooks
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A ``python3`` kernelspec that runs this interpreter, found first (JUPYTER_PATH), and this
    interpreter's folder first on PATH; matplotlib's backend left to the kernel (inline)."""
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[analysis]')")
    pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[analysis]')")
    kernelspec = pytest.importorskip("ipykernel.kernelspec", reason="ipykernel is not installed")
    prefix = tmp_path_factory.mktemp("kernel")
    kernelspec.install(kernel_name="python3", prefix=str(prefix))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", os.pathsep.join([str(prefix / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]))
    mp.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    mp.delenv("MPLBACKEND", raising=False)
    yield
    mp.undo()


def execute(name: str, params: dict, cwd: Path):
    """Run ``analysis/<name>.py`` with ``params`` (and BOOTSTRAP) set in its parameters cell, after its
    defaults (papermill's way); the executed notebook."""
    from nbclient import NotebookClient

    nb = _read(ANALYSIS / f"{name}.py")
    first = _code(nb)[0]
    first.source += "\n# test values\n" + "\n".join(f"{k} = {v!r}" for k, v in {"BOOTSTRAP": BOOTSTRAP, **params}.items())
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    print(f"{name}: {time.time() - t0:.1f} s")
    return nb


def outputs(nb) -> tuple[str, int]:
    """Everything the notebook printed or displayed as text/HTML, and how many PNG images it showed."""
    text, images = [], 0
    for cell in _code(nb):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream":
                text.append(out.text)
            data = out.get("data", {})
            images += "image/png" in data
            text += [data[k] for k in ("text/plain", "text/html") if k in data]
    return "\n".join(text), images


def said_missing(text: str, what: str) -> bool:
    """Whether the notebook printed ``what`` among the source's problems (``missing: ...`` lines)."""
    return any(line.startswith("missing:") and what in line for line in text.splitlines())


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two synthetic studies (seeds 0 and 1), an unfinished one, and an empty folder."""
    from fakestudy import fake_study

    root = tmp_path_factory.mktemp("nbdata")
    (root / "empty").mkdir()
    return {"s0": fake_study(root / "study"), "s1": fake_study(root / "study-s1", seed=1),
            "partial": fake_study(root / "partial", partial=True),
            "no_loss": fake_study(root / "no_loss", stages_done=("hparams", "mixture"), failed_stage="loss"),
            "failed_runs": fake_study(root / "failed_runs", failed_runs=3),
            "empty": root / "empty", "root": root}


def _run(kernel_env, name, params, tmp_path):
    nb = execute(name, {k: str(v) for k, v in params.items()}, tmp_path / "cwd")
    return outputs(nb)


@pytest.mark.slow
def test_loss_laws_on_a_study(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "loss_laws", {"STUDY": studies["s0"]}, tmp_path)
    assert images >= 3  # profiles, frontiers, N_opt/D_opt
    for want in ("chinchilla approach 3", "kaplan L(C)", "approaches 1-3 at the target", "verdict-", "L*",
                 "N_opt 95%"):
        assert want in text, want
    assert "not fitted" not in text and "missing:" not in text


@pytest.mark.slow
def test_hparams_on_a_study(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "hparams", {"STUDY": studies["s0"]}, tmp_path)
    assert images >= 2
    for want in ("hyperparameter laws", "verdict-", "held at 0", "B_opt", "lr_opt"):
        assert want in text, want


@pytest.mark.slow
def test_mixing_on_a_study(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "mixing", {"STUDY": studies["s0"]}, tmp_path)
    assert images >= 3  # predicted vs actual, slices, optimum
    for want in ("nested", "mixture to train on: optimum", "verdict-ok"):
        assert want in text, want


@pytest.mark.slow
def test_recipe_backtest_on_a_study(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "recipe_backtest", {"STUDY": studies["s0"]}, tmp_path)
    assert images >= 1
    for want in ("predicted loss", "d_model 64", "seed floor", "half-width", "covered", "prose_en"):
        assert want in text, want
    assert "missing:" not in text


@pytest.mark.slow
def test_compare_two_studies(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "compare_ladders", {"A": studies["s0"], "B": studies["s1"]}, tmp_path)
    assert images >= 2
    assert "effective compute multiplier of study-s1 over study" in text
    assert "verdict" in text and "comparing A with itself" not in text


@pytest.mark.slow
def test_compare_a_study_with_itself_when_b_is_missing(kernel_env, studies, tmp_path):
    text, images = _run(kernel_env, "compare_ladders", {"A": studies["s0"], "B": studies["root"] / "nowhere"}, tmp_path)
    assert images >= 2
    assert "not a folder" in text and "comparing A with itself" in text
    assert "effective compute multiplier of study (B) over study (A)" in text


@pytest.mark.slow
def test_compare_a_sweep_that_cannot_be_compared_says_why(kernel_env, studies, tmp_path):
    from conftest import fake_sweep

    sweep = fake_sweep(tmp_path / "sweep")  # its profiles have no interior minimum: approach 2 cannot fit
    text, images = _run(kernel_env, "compare_ladders", {"A": sweep, "B": studies["s0"]}, tmp_path)
    assert "no comparison: ladder A" in text and "interior minimum" in text
    assert images == 0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["partial", "no_loss", "failed_runs", "empty"])
def test_loss_laws_on_bad_input(kernel_env, studies, tmp_path, case):
    text, _ = _run(kernel_env, "loss_laws", {"STUDY": studies[case]}, tmp_path)
    want = {"partial": "stage recipe: not run: no recipe", "no_loss": "stage loss: failed (RuntimeError",
            "failed_runs": "3 of 18 runs not completed", "empty": "no study.json and no run folders"}[case]
    assert said_missing(text, want)
    if case in ("no_loss", "empty"):
        assert "no loss-law ladder" in text
    else:
        assert "chinchilla approach 3" in text


@pytest.mark.slow
@pytest.mark.parametrize("case", ["partial", "empty"])
def test_recipe_backtest_on_bad_input(kernel_env, studies, tmp_path, case):
    text, _ = _run(kernel_env, "recipe_backtest", {"STUDY": studies[case]}, tmp_path)
    if case == "partial":
        assert said_missing(text, "stage recipe: not run: no recipe")
        assert said_missing(text, "stage full/backtest: not run: no back-test")
        assert "no recipe: stage d has not run" in text
    else:
        assert said_missing(text, "no study.json and no run folders")
    assert "no back-test" in text
