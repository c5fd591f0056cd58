"""Command line of uqattr: ``uqattr train`` and ``uqattr report`` (also ``python -m uqattr ...``)."""
import argparse
import json
import os
import sys
import time

import numpy as np


def _train(args):
    from . import Ensemble, build_info, datasets

    x, y = datasets.load("mnist", "train")
    x_test, y_test = datasets.load("mnist", "test")
    if args.subset:
        x, y = x[:args.subset], y[:args.subset]
    info = build_info()
    print(f"uqattr: training {args.members} x {args.arch} on {len(x):,} MNIST images, {args.epochs} epochs, "
          f"batch {args.batch_size}, Adam lr {args.lr} ({args.schedule}); "
          f"GEMM {info['gemm']}, {info['num_threads']} threads", flush=True)
    t0 = time.perf_counter()
    model = Ensemble(args.arch, members=args.members, seed=args.seed)
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
              progress=not args.quiet)
    train_seconds = time.perf_counter() - t0
    probs = model.predict_proba(x_test)
    member_acc = [(p.argmax(1) == y_test).mean() for p in probs]
    ensemble_acc = (probs.mean(0).argmax(1) == y_test).mean()
    for k, acc in enumerate(member_acc):
        print(f"member {k}: test accuracy {acc:.4f}")
    print(f"ensemble ({args.members} members): test accuracy {ensemble_acc:.4f}")
    print(f"training wall time {train_seconds:.1f} s")
    model.save(args.out)
    print(f"saved {args.out}")
    if args.metrics:
        with open(args.metrics, "w") as f:
            json.dump({"member_accuracy": [float(a) for a in member_acc], "ensemble_accuracy": float(ensemble_acc),
                       "train_seconds": train_seconds, "build": info}, f, indent=2)
    return 0


def _report(args):
    import matplotlib
    matplotlib.use("Agg")
    from . import report

    t0 = time.perf_counter()
    result = report.build(args.out, model_path=args.model, quick=args.quick, sections=args.sections,
                          classes=args.classes.split(",") if args.classes else None, progress=not args.quiet)
    mnist = result["mnist"]
    print(f"report written to {os.path.join(args.out, 'index.html')} in {time.perf_counter() - t0:.1f} s "
          f"({result['model']['how']})")
    print(f"MNIST test: ensemble accuracy {mnist['ensemble']['accuracy']:.4f}, NLL {mnist['ensemble']['nll']:.4f}, "
          f"ECE {mnist['ensemble']['ece']:.4f}; single model accuracy {mnist['single']['accuracy']:.4f}, "
          f"NLL {mnist['single']['nll']:.4f}, ECE {mnist['single']['ece']:.4f}")
    for name, res in result["ood"].items():
        m = res["metrics"]
        print(f"OOD {name}: AUROC single-model MSP {m['msp_single']['auroc']:.4f}, ensemble MSP "
              f"{m['msp_ensemble']['auroc']:.4f}, epistemic {m['epistemic']['auroc']:.4f}, total "
              f"{m['total']['auroc']:.4f}")
    return 0


def main(argv=None):
    from .ensemble import DEFAULT_ARCH

    parser = argparse.ArgumentParser(prog="uqattr", description="Uncertainty attribution for deep ensembles.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a deep ensemble on MNIST, print test accuracy, save the model")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="architecture spec (default: %(default)s)")
    p.add_argument("--members", type=int, default=5, help="ensemble size (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="ensemble seed (default: %(default)s)")
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only (0: all)")
    p.add_argument("--out", default="model.npz", help="where to save the model (default: %(default)s)")
    p.add_argument("--metrics", default=None, help="also write accuracies and timings as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
    r = sub.add_parser("report", help="build the whole study as HTML + figures + metrics.json",
                       description="Builds OUT/index.html (every section of the study, figures beside it), "
                                   "OUT/metrics.json and OUT/model.npz.")
    r.add_argument("--out", default="report", help="output folder (default: %(default)s)")
    r.add_argument("--model", default=None, metavar="PATH",
                   help="a saved ensemble (.npz) to use; otherwise the default one is trained and cached as "
                        "OUT/model.npz (reused by the next report into OUT)")
    r.add_argument("--quick", action="store_true",
                   help="a small, fast run (2 members on 3,000 images, small subsets; for smoke tests)")
    r.add_argument("--sections", default=None,
                   help="comma-separated sections, e.g. 1.2,2.1,3.2 (or whole parts: 1,2,3); default all")
    r.add_argument("--classes", default=None, help="the classes of sections 2.4-2.6 (default: 4,8,5)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"uqattr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
