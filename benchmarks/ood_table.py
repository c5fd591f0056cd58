"""OOD-detection and calibration tables of a trained ensemble.

Evaluates a saved model (``uqattr train`` writes one) on all 10,000 MNIST test
images against every image of EMNIST letters (test), KMNIST (test), Omniglot
(evaluation) and Fashion-MNIST (test), and prints

* the OOD table: AUROC, AUPR-In, AUPR-Out, FPR@95 of each score
  (:data:`uqattr.ood.SCORES`, higher = more likely OOD) per OOD set, and the
  AUROC overview (sets x scores);
* the calibration table on MNIST test: accuracy, NLL, ECE, Brier of the
  single member and of the ensemble;
* the OOD images the single member is most sure about, per set;
* the study's targets, each marked met or not.

Usage::

    UQATTR_DATA=/path/to/datasets python benchmarks/ood_table.py --model model.npz \\
        [--member 0] [--json out.json] [--figures DIR]

The model defaults to ``model.npz``; train it with
``UQATTR_DATA=... python -m uqattr train --out model.npz`` (5 members, 3 epochs).
"""
import argparse
import json
import os
import sys
import time

from _common import import_uqattr

#: OOD sets: table name -> (dataset, split)
OOD_SETS = {
    "EMNIST letters": ("emnist-letters", "test"),
    "KMNIST": ("kmnist", "test"),
    "Omniglot": ("omniglot", "evaluation"),
    "Fashion-MNIST": ("fashion-mnist", "test"),
}

#: Best ensemble-score AUROC of a plain PyTorch pipeline (same architecture, 3-epoch Adam): the bar to reach.
REFERENCE_AUROC = {"Fashion-MNIST": 0.99, "Omniglot": 0.97, "KMNIST": 0.96, "EMNIST letters": 0.89}
ENSEMBLE_SCORES = ("msp_ensemble", "total", "aleatoric", "epistemic")
ECE_TARGET = 0.01


def targets(results, calibration):
    """The issue's targets as ``[(description, met, detail)]``."""
    out = []
    ece = calibration["ensemble"].ece
    out.append((f"ensemble ECE <= {ECE_TARGET}", ece <= ECE_TARGET, f"ECE = {ece:.4f}"))
    for name, r in results.items():
        best = r.best(ENSEMBLE_SCORES)
        a_best, a_single = r.metrics[best]["auroc"], r.metrics["msp_single"]["auroc"]
        out.append((f"{name}: best ensemble score beats single-member MSP", a_best > a_single,
                    f"{best} {a_best:.4f} vs msp_single {a_single:.4f}"))
    for name, ref in REFERENCE_AUROC.items():
        if name in results:
            r = results[name]
            best = r.best(ENSEMBLE_SCORES)
            a = r.metrics[best]["auroc"]
            out.append((f"{name}: best ensemble-score AUROC >= {ref:.2f} (PyTorch reference)", a >= ref,
                        f"{best} {a:.4f}"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model.npz", help="saved ensemble (default: %(default)s)")
    parser.add_argument("--member", type=int, default=0, help="member used as the single model (default: 0)")
    parser.add_argument("--json", default=None, help="also write all numbers as JSON here")
    parser.add_argument("--figures", default=None, help="write the histogram and reliability figures (PNG) here")
    parser.add_argument("--sets", nargs="+", default=list(OOD_SETS), choices=list(OOD_SETS), metavar="SET",
                        help="OOD sets to evaluate (default: all four)")
    parser.add_argument("--top", type=int, default=3, help="most confident OOD images listed per set (default 3)")
    args = parser.parse_args(argv)

    uqattr = import_uqattr()
    from uqattr import Ensemble, datasets, ood

    if not os.path.exists(args.model):
        print(f"no model at {args.model!r}. Train the default ensemble (5 members, 3 epochs, Adam) with\n"
              f"  UQATTR_DATA=/path/to/datasets python -m uqattr train --out {args.model}\n"
              f"and run this script again.", file=sys.stderr)
        return 2
    model = Ensemble.load(args.model)
    t0 = time.perf_counter()
    x_in, y_in = datasets.load("mnist", "test")
    ood_sets = {name: datasets.load(*OOD_SETS[name])[0] for name in args.sets}
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = ood.evaluate_many(model, x_in, ood_sets, member=args.member)
    calib = ood.calibration_report(model, x_in, y_in, member=args.member)
    t_eval = time.perf_counter() - t0

    print(f"# OOD detection with {args.model}: {model!r}")
    print(f"ID: MNIST test (n = {len(x_in):,}); single model = member {args.member}; "
          f"data loaded in {t_load:.1f} s, evaluated in {t_eval:.1f} s (uqattr {uqattr.__version__}, "
          f"{uqattr.get_num_threads()} threads)\n")
    print("Scores (higher = more likely OOD; OOD is the positive class):")
    for s in ood.SCORES:
        print(f"- `{s}`: {ood.SCORE_LABELS[s]}")
    print("\n## OOD detection per set and score (best of each set in bold)\n")
    print(ood.summary_table(results))
    print("\n## " + ood.summary_table(results, metric="auroc"))
    print(f"\n## Calibration on MNIST test (n = {len(x_in):,}; ECE with "
          f"{calib['ensemble'].n_bins} equal-width bins; Brier summed over classes)\n")
    print(ood.calibration_table(calib, member=args.member))

    print(f"\n## OOD images the single model is most sure about (top {args.top} per set)\n")
    confident = {}
    for name, x in ood_sets.items():
        c = ood.most_confident_ood(model, x, k=args.top, member=args.member)
        confident[name] = {k: v.tolist() for k, v in c.items()}
        items = ", ".join(f"#{i}: single {ps} ({pp:.4f}) / ensemble {pe} ({qe:.4f})"
                          for i, ps, pp, pe, qe in zip(c["indices"], c["single_pred"], c["single_prob"],
                                                       c["ensemble_pred"], c["ensemble_prob"]))
        print(f"- {name}: {items}")

    print("\n## Targets\n")
    checks = targets(results, calib)
    for desc, met, detail in checks:
        print(f"- [{'x' if met else ' '}] {desc}: {detail}")

    if args.figures:
        os.makedirs(args.figures, exist_ok=True)
        for name, r in results.items():
            slug = name.lower().replace(" ", "-")
            path = os.path.join(args.figures, f"ood_hist_{slug}.png")
            r.plot_histograms().savefig(path, dpi=110)
            print(f"wrote {path}")
        path = os.path.join(args.figures, "reliability.png")
        ood.plot_calibration(calib).savefig(path, dpi=110)
        print(f"wrote {path}")

    if args.json:
        data = {"model": os.path.abspath(args.model), "arch": model.arch, "members": model.members,
                "member": args.member, "n_in": int(len(x_in)),
                "ood": {name: r.to_dict() for name, r in results.items()},
                "calibration": {k: {"accuracy": c.accuracy, "nll": c.nll, "ece": c.ece, "brier": c.brier}
                                for k, c in calib.items()},
                "most_confident_ood": confident,
                "targets": [{"target": d, "met": bool(m), "detail": t} for d, m, t in checks],
                "seconds": {"load": t_load, "evaluate": t_eval}}
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
