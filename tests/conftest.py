"""Shared fixtures of the uqattr test suite.

* ``mnist_test`` / ``mnist_train_small``: MNIST via :mod:`uqattr.datasets`
  (skipped with a reason when ``UQATTR_DATA`` does not point at the shared
  ``datasets/`` folder). The arrays are shared by every test of the session,
  so they are read-only.
* ``small_ensemble``: a cheap trained default-arch ensemble (3 members,
  2,000 training images, 1 epoch; about 90% test accuracy), session-scoped.
  Its ``params`` are read-only too, so that no test can change what the
  others see; train or modify a copy instead:
  ``Ensemble.from_state_dicts(ens.state_dicts(), ens.arch, ens.in_shape, ens.seed)``.
"""
import os
from pathlib import Path

import numpy as np
import pytest

DATA = os.environ.get("UQATTR_DATA")
HAVE_DATA = bool(DATA) and Path(DATA).is_dir()

#: images and members of the shared trained ensemble
SMALL_ENSEMBLE_TRAIN = 2000
SMALL_ENSEMBLE_MEMBERS = 3


def _need_data():
    if not HAVE_DATA:
        pytest.skip("UQATTR_DATA is unset or not a folder; set it to the shared datasets/ folder "
                    "(e.g. UQATTR_DATA=../shared/datasets) to run tests on MNIST")


def _read_only(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@pytest.fixture(scope="session")
def mnist_test():
    """MNIST test split: x (10000, 1, 28, 28) float32 in [0, 1], y (10000,) int64; read-only."""
    _need_data()
    from uqattr import datasets
    x, y = datasets.load("mnist", "test")
    return _read_only(x, y)


@pytest.fixture(scope="session")
def mnist_train_small():
    """The first 5,000 MNIST training images and labels (read-only)."""
    _need_data()
    from uqattr import datasets
    x, y = datasets.load("mnist", "train")
    return _read_only(np.ascontiguousarray(x[:5000]), np.ascontiguousarray(y[:5000]))


@pytest.fixture(scope="session")
def small_ensemble(mnist_train_small):
    """A default-arch ensemble of 3 members trained 1 epoch on the first 2,000
    MNIST training images (batch 32, peak lr 5e-3, seed 0): about 90% accurate
    on the test set, trained in a few seconds. ``params`` is read-only."""
    from uqattr import DEFAULT_ARCH, Ensemble
    x, y = mnist_train_small
    n = SMALL_ENSEMBLE_TRAIN
    ens = Ensemble(DEFAULT_ARCH, members=SMALL_ENSEMBLE_MEMBERS, seed=0)
    ens.fit(x[:n], y[:n], epochs=1, batch_size=32, lr=5e-3, progress=False)
    ens.params.flags.writeable = False
    return ens


def pytest_terminal_summary(terminalreporter):
    """How many generated inputs tests/test_fuzz.py tried (a number to quote)."""
    import sys
    fuzz = next((m for name, m in sys.modules.items() if name.endswith("test_fuzz") and hasattr(m, "COUNTS")), None)
    if fuzz is None or not fuzz.COUNTS:
        return
    terminalreporter.section("fuzzed inputs")
    for name, n in sorted(fuzz.COUNTS.items()):
        terminalreporter.write_line(f"{n:7d}  {name}")
    terminalreporter.write_line(f"{sum(fuzz.COUNTS.values()):7d}  in all")
