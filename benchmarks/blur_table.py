"""Blur-test comparison of every attribution method, per target, on uncertain MNIST test images.

Ranks the pixels of the ``--images`` most uncertain (by total uncertainty) MNIST test images by each
method of :func:`uqattr.evaluate.default_methods` (a random ranking, the vanilla gradient signed and
absolute, SmoothGrad, Integrated Gradients from black and from blur, input x gradient and the
perturbation-aware gradient x (x - blur)) and runs :func:`uqattr.evaluate.blur_test` for total,
aleatoric and epistemic uncertainty (images above the median of each) and the deletion curve of
``max_prob`` (every image). Prints URC@1%, URC@5% and 1 - AUC per method and target, and which
rankings beat random.

Usage::

    UQATTR_DATA=/path/to/datasets python benchmarks/blur_table.py --model model.npz \\
        [--images 1000] [--smoothgrad-samples 50] [--ig-steps 64] [--steps N] [--json out.json] [--figure f.png]
"""
import argparse
import json
import sys
import time

from _common import import_uqattr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="model.npz")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--smoothgrad-samples", type=int, default=50)
    p.add_argument("--ig-steps", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="evaluations up to 5%% of the pixels (default: every pixel)")
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None)
    args = p.parse_args(argv)

    uqattr = import_uqattr()
    from uqattr import datasets, evaluate

    model = uqattr.Ensemble.load(args.model)
    x, y = datasets.load("mnist", "test")
    u = uqattr.uncertainty(model, x)
    idx = u.most_uncertain(args.images)
    print(f"model: {model}; {len(idx)} most uncertain MNIST test images (total {u.total[idx].min():.3f} to "
          f"{u.total[idx].max():.3f} nats; test-set mean {u.total.mean():.4f})")
    methods = evaluate.default_methods(model, smoothgrad_samples=args.smoothgrad_samples, ig_steps=args.ig_steps)
    t0 = time.perf_counter()
    cmp = evaluate.compare_attributions(model, x[idx], targets=["total", "aleatoric", "epistemic", "max_prob"],
                                        methods=methods, steps=args.steps)
    seconds = time.perf_counter() - t0
    tested = {t: len(cmp.results["random"][t].indices) for t in cmp.targets}
    print(f"\nblur test (sigma 1.5 px, up to 5% of the pixels, SmoothGrad {args.smoothgrad_samples} samples, "
          f"IG {args.ig_steps} steps), images tested per target: {tested}; {seconds:.0f} s\n")
    print(cmp.to_markdown())
    urc5 = cmp.table("urc@5%")
    print()
    for t in cmp.targets:
        beat = [m for m in cmp.methods if m != "random" and urc5[m][t] > urc5["random"][t]]
        lose = [m for m in cmp.methods if m != "random" and urc5[m][t] <= urc5["random"][t]]
        print(f"{t}: best {cmp.best(t)} (URC@5% {urc5[cmp.best(t)][t]:.4f}); random {urc5['random'][t]:.4f}; "
              f"not above random: {', '.join(lose) or 'none'}; above: {len(beat)} methods")
    pa = "gradient \u00d7 (x \u2212 blur)"
    ok = all(urc5[pa][t] > urc5["random"][t] for t in cmp.targets)
    print(f"\nperturbation-aware ranking beats random for every target: {'yes' if ok else 'NO'}")
    if args.figure:
        cmp.plot().savefig(args.figure, dpi=100, bbox_inches="tight")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": len(idx), "tested": tested, "seconds": seconds,
                       "methods": {m: {t: r.summary() for t, r in by_t.items()} for m, by_t in cmp.results.items()}},
                      f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
