"""Interrupts and files: Ctrl-C (SIGINT) during fit leaves a usable model and a live process; a
process killed (SIGKILL) while saving leaves the previous model file intact. (An exception during
save: tests/test_ensemble.py::test_save_is_atomic; a file from a newer format version:
tests/test_fuzz.py::test_newer_format_version_is_a_clear_error.)

Each scenario runs in a subprocess, so that a signal or a kill cannot take pytest with it."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from uqattr import Ensemble

ENV = dict(os.environ, UQATTR_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

FIT_UNTIL_CTRL_C = textwrap.dedent("""
    import sys
    import numpy as np
    from uqattr import Ensemble
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    ens = Ensemble("conv4-pool-fc10", members=2, seed=0)
    init = ens.params.copy()
    print("fitting", flush=True)
    try:
        ens.fit(x, y, epochs=100000, batch_size=16, progress={progress})  # hours: only Ctrl-C ends it
        sys.exit("fit returned")
    except KeyboardInterrupt:
        pass
    p = ens.params
    assert np.isfinite(p).all(), "non-finite weights after Ctrl-C"
    assert not np.array_equal(p, init), "no step was taken before Ctrl-C"
    probs = ens.predict_proba(x[:8])
    assert probs.shape == (2, 8, 10) and np.allclose(probs.sum(-1), 1, atol=1e-5)
    # the weights are a consistent state: the same as a fresh ensemble holding them predicts
    same = Ensemble.from_state_dicts(ens.state_dicts(), ens.arch)
    np.testing.assert_array_equal(same.predict_proba(x[:8]), probs)
    # the training guard was released: fit runs again (and another Ctrl-C could stop it)
    ens.fit(x[:32], y[:32], epochs=1, batch_size=16, progress=False)
    assert np.isfinite(ens.params).all()
    print("ok", len(ens.history), flush=True)
""")


def _start(code, *args):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.parametrize("progress", [False, True], ids=["no-bar", "progress-bar"])
def test_ctrl_c_during_fit_leaves_a_usable_model(progress):
    proc = _start(FIT_UNTIL_CTRL_C.format(progress=progress))
    try:
        assert proc.stdout.readline().strip() == "fitting"
        time.sleep(1.0)  # let it take some steps (it cannot finish: 100,000 epochs)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"rc {proc.returncode}\n{out}\n{err[-3000:]}"
    assert out.startswith("ok"), out


SAVE_FOREVER = textwrap.dedent("""
    import sys
    from uqattr import Ensemble
    ens = Ensemble("fc512-fc10", members=6, seed=0)  # 6 x 407,050 weights: a 9.8 MB file
    v = 0
    while True:
        ens.params[:] = v  # version v: every weight is v, and so is the seed
        ens.seed = v
        ens.save(sys.argv[1])
        print(v, flush=True)
        v += 1
""")


def test_kill_during_save_leaves_the_previous_file(tmp_path):
    """SIGKILL at random moments of a loop of saves: the file always loads and holds one whole
    version, the last one reported saved or the one after (the rename is atomic)."""
    rnd = random.Random(int.from_bytes(os.urandom(4), "little"))
    path = tmp_path / "model.npz"
    results = []
    for _ in range(4):
        proc = _start(SAVE_FOREVER, path)
        try:
            assert proc.stdout.readline().strip().isdigit()  # one save done: the file exists
            time.sleep(rnd.uniform(0.0, 0.6))
            proc.kill()  # SIGKILL: no handler, no clean-up
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
        last = int(([v for v in out.split() if v.isdigit()] or [0])[-1])
        ens = Ensemble.load(path)
        version = ens.seed
        assert np.all(ens.params == version), "the file mixes versions"
        assert ens.members == 6 and last <= version <= last + 1, (last, version)
        results.append((last, version))
    # temporary files of interrupted saves stay behind (nothing runs after SIGKILL); they never
    # replace the model file
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.npz"]
    assert all(name.startswith(".tmp-") for name in leftovers), leftovers
    print("killed after versions (reported saved, in the file):", results, "; temp files left:", len(leftovers))

