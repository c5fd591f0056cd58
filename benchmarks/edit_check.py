"""The editing checks of the uncertainty-attribution study, on MNIST test.

1. Raising uncertainty along its gradient: on the 10 least uncertain test
   images, ``edit.along_gradient(direction=+1)`` within L∞ ≤ 0.3 (50 sign
   steps of 0.02) should raise the mean total uncertainty at least 10-fold.
2. Erasing salient stroke pixels: over a random sample of correctly
   classified test images (default 200) and the same number of least
   uncertain ones, erasing 20% of each image's stroke pixels ranked by the
   input×gradient attribution of ``"max_prob"`` (largest positive first: the
   first-order effect of erasing) should lower the predicted class's
   probability more than erasing as many random stroke pixels (mean over
   seeds). The same comparison is printed for the plain gradient's magnitude
   ``|∂ max_prob / ∂x|`` and, for reference, the signed gradient, whatever
   they show.

Usage::

    UQATTR_DATA=../shared/datasets python benchmarks/edit_check.py --model model.npz

Exit status 0 when both checks pass, 1 otherwise (2 on a usage error).
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import import_uqattr, table  # noqa: E402


def _mean_se(a):
    import numpy as np
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")


def check_gradient(model, x, u, args):
    import numpy as np
    from uqattr import edit
    idx = u.least_uncertain(args.k)
    xs = np.ascontiguousarray(x[idx])
    t0 = time.perf_counter()
    edited, trace = edit.along_gradient(model, xs, target="total", steps=args.steps, step_size=args.step_size,
                                        direction=+1, eps=args.eps, norm="linf", return_trace=True)
    seconds = time.perf_counter() - t0
    rep = edit.edit_report(model, xs, edited)
    before, after = float(rep["total_before"].mean()), float(rep["total_after"].mean())
    ratio = after / before if before > 0 else float("inf")
    print(f"== 1. along_gradient(direction=+1, target='total', L-inf eps={args.eps}, {args.steps} steps of "
          f"{args.step_size}) on the {args.k} least uncertain test images")
    print(edit.format_report(rep))
    print(f"test indices: {idx.tolist()}")
    print(f"max |x' - x| = {rep['linf'].max():.4f} (budget {args.eps}); pixels in [{edited.min():.3f}, "
          f"{edited.max():.3f}]; predictions changed: {int(rep['changed'].sum())}/{len(idx)}; {seconds:.1f} s")
    per_image = rep["total_after"] / np.maximum(rep["total_before"], 1e-30)
    print(f"mean total uncertainty (nats): before {before:.6g}, after {after:.6g}; ratio of means "
          f"{ratio:.1f}x (target >= 10x) -> {'PASS' if ratio >= 10 else 'FAIL'}")
    print(f"per-image ratios: median {np.median(per_image):.3g}x, min {per_image.min():.3g}x; best iterate vs "
          f"last: mean of per-image max over steps {trace.max(axis=0).mean():.6g}")
    return {"indices": idx.tolist(), "total_before": before, "total_after": after, "ratio": ratio,
            "max_linf": float(rep["linf"].max()), "changed": int(rep["changed"].sum()), "pass": ratio >= 10}


def check_erase(model, x, name, args):
    import numpy as np
    from uqattr import InputXGradient, Saliency, edit, uncertainty
    t0 = time.perf_counter()
    u = uncertainty(model, x)
    pred, p0 = u.pred, u.max_prob.astype(np.float64)
    rows = np.arange(len(x))

    def drop(edited):
        p1 = model.predict_proba(edited).mean(axis=0)[rows, pred]
        return p0 - p1

    ixg = InputXGradient(model).attribute(x, target="max_prob")
    grad = Saliency(model).attribute(x, target="max_prob")
    counts = edit.erase_counts(x, args.fraction)
    runs = {}
    e_ixg, m_ixg = edit.erase_salient(x, ixg, args.fraction, return_mask=True)
    runs["input x gradient (signed)"] = drop(e_ixg)
    random_drops = np.stack([drop(edit.erase_random(x, args.fraction, seed=s)) for s in range(args.seeds)])
    runs[f"random (mean of {args.seeds} seeds)"] = random_drops.mean(axis=0)
    runs["|gradient|"] = drop(edit.erase_salient(x, grad, args.fraction, signed=False))
    runs["gradient (signed, ref.)"] = drop(edit.erase_salient(x, grad, args.fraction, signed=True))
    predicted = (ixg.reshape(len(x), -1) * m_ixg.reshape(len(x), -1)).sum(axis=1)
    seconds = time.perf_counter() - t0
    rnd = runs[f"random (mean of {args.seeds} seeds)"]
    out_rows, result = [], {}
    for label, d in runs.items():
        m, se = _mean_se(d)
        win = float(np.mean(d > rnd)) if d is not rnd else float("nan")
        out_rows.append([label, f"{m:.4f}", f"{se:.4f}", "-" if d is rnd else f"{win:.2f}",
                         f"{np.median(d):.4f}"])
        result[label] = {"mean_drop": m, "se": se, "win_rate_vs_random": win}
    print(f"\n== 2. erase {args.fraction:.0%} of stroke pixels (> 0.1) per image, {name}: {len(x)} images "
          f"(mean prob. {p0.mean():.4f}, {counts.mean():.1f} pixels erased per image on average, "
          f"{seconds:.1f} s)")
    print(table(["ranking", "mean drop", "s.e.", "P(drop > random)", "median drop"], out_rows))
    print(f"random seeds, mean drop each: {', '.join(f'{v:.4f}' for v in random_drops.mean(axis=1))}")
    m_ixg_drop, m_rnd = result["input x gradient (signed)"]["mean_drop"], result[rnd_key(args)]["mean_drop"]
    ok = m_ixg_drop > m_rnd
    print(f"first-order prediction of the input x gradient drop (sum of erased attributions): mean "
          f"{predicted.mean():.4f}; correlation with the actual drop "
          f"{np.corrcoef(predicted, runs['input x gradient (signed)'])[0, 1]:.2f}")
    print(f"input x gradient vs random: {m_ixg_drop:.4f} vs {m_rnd:.4f} -> {'PASS' if ok else 'FAIL'}; "
          f"|gradient| vs random: {result['|gradient|']['mean_drop']:.4f} vs {m_rnd:.4f} "
          f"({'more' if result['|gradient|']['mean_drop'] > m_rnd else 'less'} than random)")
    result.update(n=len(x), mean_erased=float(counts.mean()), pass_=ok)
    return result


def rnd_key(args):
    return f"random (mean of {args.seeds} seeds)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="model.npz", help="saved ensemble (default: %(default)s)")
    p.add_argument("--k", type=int, default=10, help="least uncertain images for check 1 (default: %(default)s)")
    p.add_argument("--steps", type=int, default=50, help="gradient steps (default: %(default)s)")
    p.add_argument("--step-size", type=float, default=0.02, help="L-inf step (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.3, help="L-inf budget (default: %(default)s)")
    p.add_argument("--n", type=int, default=200, help="images per set for check 2 (default: %(default)s)")
    p.add_argument("--fraction", type=float, default=0.2, help="share of stroke pixels erased (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=5, help="random-erasure seeds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random image sample (default: %(default)s)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.n < 100:
        print("note: the study asks for >= 100 images in check 2", file=sys.stderr)

    import numpy as np
    uqattr = import_uqattr()
    from uqattr import Ensemble, datasets, uncertainty
    try:
        model = Ensemble.load(args.model)
    except (FileNotFoundError, ValueError) as e:
        print(f"edit_check: {e}", file=sys.stderr)
        return 2
    x, y = datasets.load("mnist", "test")
    t0 = time.perf_counter()
    u = uncertainty(model, x)
    acc = float((u.pred == y).mean())
    print(f"model {args.model}: {model.members} members, {model.arch}; MNIST test accuracy {acc:.4f}; "
          f"uqattr {uqattr.__version__}, {uqattr.get_num_threads()} threads; uncertainty of 10,000 images "
          f"in {time.perf_counter() - t0:.1f} s\n")
    results = {"model": os.path.abspath(args.model), "members": model.members, "accuracy": acc}
    results["gradient"] = check_gradient(model, x, u, args)

    correct = np.flatnonzero(u.pred == y)
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(correct, size=min(args.n, len(correct)), replace=False))
    results["erase_random_correct"] = check_erase(model, np.ascontiguousarray(x[pick]),
                                                  f"random correctly classified (seed {args.seed})", args)
    least = u.least_uncertain(args.n)
    results["erase_least_uncertain"] = check_erase(model, np.ascontiguousarray(x[least]),
                                                   "least uncertain", args)
    ok = results["gradient"]["pass"] and results["erase_random_correct"]["pass_"]
    print(f"\nsummary: gradient check {'PASS' if results['gradient']['pass'] else 'FAIL'} "
          f"({results['gradient']['ratio']:.1f}x); erase check on random correct images "
          f"{'PASS' if results['erase_random_correct']['pass_'] else 'FAIL'}; on least uncertain images "
          f"{'PASS' if results['erase_least_uncertain']['pass_'] else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
