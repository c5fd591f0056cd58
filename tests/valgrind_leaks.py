"""Every _uqattr entry point (and fit / predict / attribute / save / load) a few times, valid and
invalid: the workload of tests/valgrind_leaks.sh, which runs it under valgrind memcheck. Not a
pytest module (no test_ prefix); runs on its own in a few seconds without valgrind."""
import os
import sys
import tempfile

import numpy as np

import uqattr
from uqattr import Ensemble, _uqattr

SPEC, SHAPE = "conv2-pool-fc3", (1, 6, 6)
sh = dict(in_shape=SHAPE)


def bad(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return
    raise AssertionError(f"{fn} accepted bad input")


def main(reps=3):
    rng = np.random.default_rng(0)
    params = np.stack([_uqattr.init_params(SPEC, s, **sh) for s in (1, 2)])
    p0, m, v = params[0].copy(), np.zeros(params.shape[1], np.float32), np.zeros(params.shape[1], np.float32)
    x = rng.uniform(size=(5,) + SHAPE).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0])
    xnan = x.copy()
    xnan[0, 0, 0, 0] = np.nan
    for _ in range(reps):
        _uqattr.build_info(), _uqattr.get_num_threads(), _uqattr.cuda_probe()
        _uqattr.set_num_threads(1)
        bad(_uqattr.set_num_threads, -1), bad(_uqattr.set_gemm_backend, "mkl")
        _uqattr.arch_layers(SPEC, **sh), bad(_uqattr.arch_layers, "conv2-xyz-fc3"), bad(_uqattr.arch_layers, SPEC, in_shape=(1, 2))
        _uqattr.init_params(SPEC, 5, **sh), bad(_uqattr.init_params, "fc1", 1)
        _uqattr.permutation(50, 1, 2), bad(_uqattr.permutation, -1, 0)
        _uqattr.check_data(SPEC, x.astype(np.float64), y, **sh), bad(_uqattr.check_data, SPEC, x, y + 5, **sh)
        probs = _uqattr.predict(SPEC, params, x, **sh)
        _uqattr.predict(SPEC, params, np.asfortranarray(x), logits=True, batch_size=2, **sh)
        bad(_uqattr.predict, SPEC, params, xnan, **sh), bad(_uqattr.predict, SPEC, params, (x * 255).astype(np.uint8), **sh)
        bad(_uqattr.predict, SPEC, params.astype(np.float64), x, **sh)
        dl = rng.normal(size=(5, 2, 3)).astype(np.float32)
        _uqattr.vjp(SPEC, p0, x, dl, **sh), bad(_uqattr.vjp, SPEC, p0, x, dl[:, :, :2], **sh)
        _uqattr.input_gradients(SPEC, params, x, [(0, None), (2, None), (4, y % 3), (5, y % 3)], chunk=2, **sh)
        bad(_uqattr.input_gradients, SPEC, params, x, [(4, y + 7)], **sh), bad(_uqattr.input_gradients, SPEC, params, x, [0], **sh)
        _uqattr.decompose(probs), bad(_uqattr.decompose, probs + 1)
        s_in, s_out = rng.normal(size=30), rng.normal(size=20) + 1
        _uqattr.ood_metrics(s_in, s_out), _uqattr.ood_metrics(s_in, s_out, fpr_convention="id_positive")
        bad(_uqattr.ood_metrics, s_in, np.array([np.nan]))
        _uqattr.calibration(probs[0], y, 5), bad(_uqattr.calibration, probs[0], y + 5)
        _uqattr.histogram(s_in, 7), _uqattr.histogram(s_in, np.linspace(-2, 2, 5)), _uqattr.histogram(s_in, 3, (0, 1))
        bad(_uqattr.histogram, np.array([np.inf])), bad(_uqattr.histogram, s_in, 3, "ab")
        _uqattr.histogram_edges(s_in, s_out, 9), bad(_uqattr.histogram_edges, s_in, np.array([np.inf]))
        tr = _uqattr.Trainer(SPEC, 5, **sh)
        tr.step(p0, m, v, 1, x, y, 1e-3), tr.gradients(p0, x, y)
        bad(tr.step, p0, m, v, 1, x, y + 5, 1e-3), bad(tr.step, p0, m, v, 1, x, y, float("inf")), bad(tr.gradients, p0, x, y * 1.0)
        bad(_uqattr.Trainer, SPEC, 5, optimizer="lbfgs"), bad(_uqattr.Trainer, SPEC, 0)
        del tr
        ens = Ensemble(SPEC, members=2, seed=1, in_shape=SHAPE).fit(x, y, epochs=2, batch_size=2, progress=False)
        ens.predict_proba(x), uqattr.Saliency(ens).attribute(x, target=["total", "epistemic", 1])
        bad(ens.fit, x, y + 5, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.npz")
            Ensemble.load(ens.save(path))
            with open(path, "r+b") as f:
                f.truncate(300)
            bad(Ensemble.load, path)
    print("valgrind workload: done")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
