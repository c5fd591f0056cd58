"""Threads: the C core releases the GIL, so predictions and attributions on one ensemble run in
parallel and must give the serial results; training excludes them (python/uqattr/_locks.py): a
prediction while fit runs raises RuntimeError, fit waits for running predictions, never a mix."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import uqattr
from uqattr import Ensemble

SPEC = "conv4-pool-fc10"
N_THREADS = 4


@pytest.fixture(scope="module")
def ens():
    e = Ensemble(SPEC, members=3, seed=5)
    e.params.flags.writeable = False
    return e


def _batches(n=4, size=48, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=(size, 1, 28, 28)).astype(np.float32) for _ in range(n)]


def _in_threads(fn, args, repeats=3):
    """fn(arg) for every arg, each in its own thread, all started together, `repeats` times each;
    returns {index: [results]} and re-raises the first error of any thread."""
    barrier = threading.Barrier(len(args))
    results, errors = {i: [] for i in range(len(args))}, []

    def work(i, arg):
        try:
            barrier.wait()
            for _ in range(repeats):
                results[i].append(fn(arg))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    if errors:
        raise errors[0]
    return results


def test_parallel_predict_equals_serial(ens):
    xs = _batches()
    serial = [ens.predict_proba(x) for x in xs]
    got = _in_threads(ens.predict_proba, xs)
    for i, runs in got.items():
        for r in runs:
            np.testing.assert_array_equal(r, serial[i])
    # also the same batch from every thread at once
    same = _in_threads(ens.predict_logits, [xs[0]] * N_THREADS)
    want = ens.predict_logits(xs[0])
    for runs in same.values():
        for r in runs:
            np.testing.assert_array_equal(r, want)


def test_parallel_attribute_equals_serial(ens):
    xs = _batches(size=24, seed=1)
    targets = ["total", "epistemic", "max_prob", 3]

    def attribute(x):
        return uqattr.Saliency(ens).attribute(x, target=targets)

    serial = [attribute(x) for x in xs]
    got = _in_threads(attribute, xs, repeats=2)
    for i, runs in got.items():
        for r in runs:
            for t in r:
                np.testing.assert_array_equal(r[t], serial[i][t])
    member = uqattr.InputXGradient(ens, member=1)
    want = member.attribute(xs[0], target="aleatoric")
    for runs in _in_threads(lambda x: member.attribute(x, target="aleatoric"), [xs[0]] * N_THREADS).values():
        for r in runs:
            np.testing.assert_array_equal(r, want)


def _trainee(seed=1):
    return Ensemble(SPEC, members=2, seed=seed)


def _fit_in_thread(e, x, y, epochs):
    errors = []

    def run():
        try:
            e.fit(x, y, epochs=epochs, batch_size=16, progress=False)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


def _wait_for(cond, what, timeout=60.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_predict_while_fitting_raises_or_sees_whole_weights():
    """Predictions from another thread during fit: each one raises a clear RuntimeError or returns
    the prediction of the weights before or after fit, never of weights mid-update."""
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(256, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 256)
    probe = x[:16]
    e = _trainee()
    before = e.predict_proba(probe)
    t, errors = _fit_in_thread(e, x, y, epochs=4)
    refused, results, member_results = 0, [], []
    _wait_for(lambda: e._guard._writer is not None or not t.is_alive(), "fit to start")
    while t.is_alive():
        try:
            results.append(e.predict_proba(probe))
        except RuntimeError as err:
            assert "being trained" in str(err)
            refused += 1
        try:
            member_results.append(e.member(1).predict_proba(probe))  # a member shares the weights and the guard
        except RuntimeError as err:
            assert "being trained" in str(err)
            refused += 1
    t.join()
    assert not errors, errors
    after = e.predict_proba(probe)
    assert refused > 0, "no prediction overlapped fit: the test did not test anything"
    assert not np.array_equal(before, after)
    for r in results:
        assert np.array_equal(r, before) or np.array_equal(r, after), "a prediction saw weights mid-update"
    for r in member_results:
        assert np.array_equal(r, before[1:]) or np.array_equal(r, after[1:]), "member 1 saw weights mid-update"


def test_fit_waits_for_a_running_prediction():
    """fit started while a long prediction runs waits for it: the prediction is that of the
    weights before fit, computed without interference."""
    rng = np.random.default_rng(3)
    big = rng.uniform(size=(20000, 1, 28, 28)).astype(np.float32)
    x, y = big[:64], rng.integers(0, 10, 64)
    e = _trainee(seed=4)
    want = Ensemble.from_state_dicts(e.state_dicts(), SPEC).predict_proba(big)  # same weights, other object
    out, waited = {}, []
    cond = e._guard._cond
    wait_for = cond.wait_for

    def recording_wait_for(predicate, timeout=None):  # did fit find a reader it had to wait for?
        waited.append(not predicate())
        return wait_for(predicate, timeout)

    cond.wait_for = recording_wait_for
    reader = threading.Thread(target=lambda: out.setdefault("p", e.predict_proba(big)))
    reader.start()
    _wait_for(lambda: e._guard._readers > 0 or not reader.is_alive(), "the prediction to start")
    e.fit(x, y, epochs=1, batch_size=16, progress=False)  # waits for the reader
    reader.join()
    np.testing.assert_array_equal(out["p"], want)
    assert waited == [True], f"fit did not have to wait (the prediction was over): {waited}; use a larger batch"
    assert not np.array_equal(e.predict_proba(big[:8]), want[:, :8])  # fit did train


def test_second_fit_raises():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(size=(256, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 256)
    e = _trainee(seed=6)
    t, errors = _fit_in_thread(e, x, y, epochs=3)
    _wait_for(lambda: e._guard._writer is not None or not t.is_alive(), "fit to start")
    if t.is_alive():
        with pytest.raises(RuntimeError, match="already being trained"):
            e.fit(x[:32], y[:32], epochs=1, progress=False)
        with pytest.raises(RuntimeError, match="being trained"):
            e.member(0).fit(x[:32], y[:32], epochs=1, progress=False)
    t.join()
    assert not errors, errors
    assert np.isfinite(e.params).all()


CTRL_C_WHILE_WAITING = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    from uqattr import Ensemble
    e = Ensemble("conv4-pool-fc10", members=1, seed=0)
    x, y = np.zeros((32, 1, 28, 28), np.float32), np.zeros(32, int)
    release = threading.Event()
    def reader():
        with e._guard.read():  # a prediction that takes a while
            release.wait()
    t = threading.Thread(target=reader)
    t.start()
    while e._guard._readers == 0:
        time.sleep(0.001)
    def ctrl_c():
        while e._guard._writer is None:  # fit is waiting for the reader
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=ctrl_c).start()
    try:
        e.fit(x, y, epochs=1, progress=False)
        raise SystemExit("fit did not wait")
    except KeyboardInterrupt:
        pass
    release.set()
    t.join()
    assert e._guard._writer is None, "the guard stayed taken after Ctrl-C"
    e.predict_proba(x[:2])
    e.fit(x, y, epochs=1, progress=False)
    print("ok")
""")


def test_ctrl_c_while_fit_waits_releases_the_guard():
    """Regression: Ctrl-C while fit waited for running predictions left the guard taken: every
    later predict raised "being trained" and every fit "already being trained"."""
    env = dict(os.environ, UQATTR_NUM_THREADS="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_WAITING], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0 and "ok" in res.stdout, f"rc {res.returncode}\n{res.stdout}\n{res.stderr[-2000:]}"
