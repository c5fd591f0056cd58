"""The notebooks in ``notebooks/``: stored clean, public API only, and each one
runs top to bottom on a fresh kernel.

The execution tests run every notebook in quick mode (``UQATTR_QUICK=1``: a
2-member ensemble trained in seconds, small subsets) with nbclient on a
``python3`` kernel that is this interpreter, and check that figures came out.
They need the datasets (``UQATTR_DATA``) and are skipped without them. Each
executed notebook is written to the test's tmp folder, and its wall time is
printed (``pytest -s`` or ``-rA`` shows it).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]

#: references to private names of uqattr (``uqattr._uqattr``, ``uqattr.attr._images``,
#: ``from uqattr.attr import _images``) or to any private attribute (``model._params``)
PRIVATE_PATTERNS = [
    re.compile(r"uqattr\.[a-z_.]*\._(?!_)"),
    re.compile(r"\buqattr(?:\.\w+)*\._(?!_)"),
    re.compile(r"\bfrom\s+uqattr(?:\.\w+)*\s+import\s+(?:\([^)]*|[^\n#]*)\b_\w"),
    re.compile(r"\.\_(?!_)\w"),
]

#: names jupyter_client replaces with ``sys.executable`` when it launches a kernel
PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


def _private_references(source):
    return [m.group(0) for p in PRIVATE_PATTERNS for m in p.finditer(source)]


def _read(path):
    return nbformat.read(str(path), as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# ---- the stored notebooks ----------------------------------------------------------------------

def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, f"expected at least 4 notebooks in {NOTEBOOK_DIR}, found {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_stored_clean(path):
    """Valid nbformat 4, no outputs, no execution counts, a Markdown title first,
    and the quick-mode switch read from the environment."""
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    assert nb.cells and nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{path.name}: the first cell must be a Markdown title"
    assert 'os.environ.get("UQATTR_QUICK") == "1"' in _code_cells(nb)[0].source, \
        f"{path.name}: the first code cell must read QUICK from UQATTR_QUICK"


@pytest.mark.parametrize("source, private", [
    ("import uqattr._uqattr", True),
    ("x = uqattr._uqattr.predict(a)", True),
    ("g = uqattr.attr._images(model, x)", True),
    ("from uqattr.attr import _images", True),
    ("from uqattr.attr import Saliency, _images", True),
    ("from uqattr import (\n    plots,\n    _uqattr,\n)", True),
    ("p = model._params", True),
    ("import uqattr\nfrom uqattr import datasets, plots\nmodel = uqattr.Ensemble()", False),
    ("from uqattr.attr import Saliency\n_, delta = ig.attribute(x)", False),
    ("print(model.__class__.__name__, uqattr.__version__)", False),
])
def test_private_name_check(source, private):
    """The check below catches what it should (and no public use)."""
    assert bool(_private_references(source)) == private


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_uses_public_api_only(path):
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type == "code":
            found = _private_references(cell.source)
            assert not found, f"{path.name}, cell {i}: references private names {found}"


# ---- running them --------------------------------------------------------------------------------

def _prefix_of(executable):
    try:
        out = subprocess.run([executable, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _python3_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        return False
    return argv0 in PYTHON_NAMES or _prefix_of(argv0) == sys.prefix


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory):
    """Makes kernel "python3" run this interpreter: returns the JUPYTER_PATH
    entry to prepend (a kernelspec installed into a temp prefix), or None when
    the python3 kernelspec already resolves to it."""
    if _python3_is_this_interpreter():
        return None
    from ipykernel.kernelspec import install
    prefix = tmp_path_factory.mktemp("kernelspec")
    install(prefix=str(prefix), kernel_name="python3")
    return str(prefix / "share" / "jupyter")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch, python3_kernel):
    if not os.environ.get("UQATTR_DATA"):
        pytest.skip("UQATTR_DATA is not set; set it to the shared datasets/ folder to run the notebooks")
    monkeypatch.setenv("UQATTR_QUICK", "1")
    # the kernel runs in tmp_path, so a relative data folder (CI's ../shared/datasets) is made absolute
    monkeypatch.setenv("UQATTR_DATA", os.path.abspath(os.environ["UQATTR_DATA"]))
    monkeypatch.delenv("UQATTR_MODEL", raising=False)
    if python3_kernel:
        monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [python3_kernel,
                                                                           os.environ.get("JUPYTER_PATH")])))
    assert _python3_is_this_interpreter()

    nb = _read(path)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))  # which Python ran it
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    seconds = time.perf_counter() - t0
    nbformat.write(nb, str(tmp_path / path.name))
    print(f"\n{path.name}: executed in {seconds:.1f} s (quick mode)")

    prefix = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream").strip()
    assert prefix == sys.prefix, f"the kernel ran {prefix!r}, not this interpreter ({sys.prefix})"
    outputs = [o for c in _code_cells(nb)[:-1] for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 1, f"{path.name} showed no figure"
    assert all(c.execution_count is not None for c in _code_cells(nb)), "not every code cell ran"
    assert len(nb.cells) == n_cells + 1
