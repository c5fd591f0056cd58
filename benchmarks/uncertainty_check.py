"""The real-data claims of the uncertainty decomposition, on a trained ensemble.

    python benchmarks/uncertainty_check.py --model model.npz

Prints mean epistemic uncertainty on MNIST test, Fashion-MNIST test and
uniform-noise images (targets: each OOD set >= 5x MNIST), whether the 10 least
uncertain MNIST test images are all right with prob >= 0.99, and the accuracy
of the 100 most uncertain images against the whole test set.
"""
import argparse
import json

import numpy as np

import uqattr
from uqattr import datasets


def check(model, n_noise=10000, seed=0):
    x, y = datasets.load("mnist", "test")
    xf, _ = datasets.load("fashion-mnist", "test")
    noise = np.random.default_rng(seed).random((n_noise, 1, 28, 28), dtype=np.float32)
    u = uqattr.uncertainty(model, x)
    uf = uqattr.uncertainty(model, xf)
    un = uqattr.uncertainty(model, noise)
    least = u.least_uncertain(10)
    most = u.most_uncertain(100)
    acc = float((u.pred == y).mean())
    return {
        "epistemic_mnist": float(u.epistemic.mean()),
        "epistemic_fashion": float(uf.epistemic.mean()),
        "epistemic_noise": float(un.epistemic.mean()),
        "ratio_fashion": float(uf.epistemic.mean() / u.epistemic.mean()),
        "ratio_noise": float(un.epistemic.mean() / u.epistemic.mean()),
        "least10_all_right": bool(np.all(u.pred[least] == y[least])),
        "least10_min_prob": float(u.max_prob[least].min()),
        "most100_accuracy": float((u.pred[most] == y[most]).mean()),
        "test_accuracy": acc,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="model.npz")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args()
    r = check(uqattr.Ensemble.load(args.model))
    print(f"mean epistemic (nats): MNIST {r['epistemic_mnist']:.5f}, Fashion-MNIST {r['epistemic_fashion']:.5f} "
          f"({r['ratio_fashion']:.1f}x), uniform noise {r['epistemic_noise']:.5f} ({r['ratio_noise']:.1f}x)")
    print(f"10 least uncertain: all right = {r['least10_all_right']}, min prob {r['least10_min_prob']:.5f}")
    print(f"100 most uncertain: accuracy {r['most100_accuracy']:.3f} vs test set {r['test_accuracy']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
