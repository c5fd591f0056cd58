"""Memory of attribution at scale: Saliency over up to 100,000 images in bounded working memory.

Each run is a fresh worker process (so that its peak RSS is its own): MNIST test images tiled to
N images (10,000 and 100,000 by default), a small ensemble (default "fc256-fc10", 5 members,
trained 1 epoch on 5,000 training images), one core, then

    uqattr.Saliency(ens).attribute(x, target=TARGETS)

The C core works through the images in chunks (``chunk=32`` images at a time for all members), so
the memory it needs beyond its input and its output should not grow with N. Reported per run:
RSS before the call (interpreter, NumPy, the model, the N input images), the peak RSS during the
call (sampled every 5 ms, and ru_maxrss), the size of the output (N x 784 float32 per target:
314 MB per target at N = 100,000) and the working memory = peak - before - output, and the time.

    python benchmarks/attr_scale.py [--n 10000 100000] [--arch fc256-fc10] [--members 5]
                                     [--targets total] [--threads 1]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(n, arch, members, targets, threads):
    os.environ["UQATTR_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(threads)
    import resource
    import threading
    import time

    import numpy as np

    sys.path.insert(0, HERE)
    from _common import import_uqattr, load_mnist
    uqattr = import_uqattr()

    page = os.sysconf("SC_PAGE_SIZE")

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    xt, yt, note = load_mnist(5000, split="train")
    ens = uqattr.Ensemble(arch, members=members, seed=0).fit(xt, yt, epochs=1, batch_size=64, progress=False)
    x10k, _, test_note = load_mnist(10000, split="test", shuffle=False)
    x = np.ascontiguousarray(np.tile(x10k, (-(-n // len(x10k)), 1, 1, 1))[:n])
    del xt, yt, x10k
    sal = uqattr.Saliency(ens)
    sal.attribute(x[:64], target=targets)  # warm-up (first-call allocations)
    before = rss()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    out = sal.attribute(x, target=targets)
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss())
    maps = list(out.values()) if isinstance(out, dict) else [out]
    out_bytes = sum(m.nbytes for m in maps)
    assert all(m.shape == (n, 28, 28) and np.isfinite(m).all() for m in maps)
    print(json.dumps({
        "n": n, "arch": arch, "members": members, "targets": targets, "threads": threads, "seconds": seconds,
        "input_mb": x.nbytes / 1e6, "rss_before_mb": before / 1e6, "peak_mb": peak[0] / 1e6,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6,
        "output_mb": out_bytes / 1e6, "working_mb": (peak[0] - before - out_bytes) / 1e6,
        "data": test_note, "gemm": uqattr.build_info()["gemm"]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--arch", default="fc256-fc10")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--targets", nargs="+", default=["total"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    targets = a.targets if len(a.targets) > 1 else a.targets[0]
    if a.worker:
        return worker(a.n[0], a.arch, a.members, targets, a.threads)
    print(f"Saliency over N images, {a.arch} x {a.members} members, target(s) {a.targets}, "
          f"{a.threads} thread(s); each N in its own process")
    print(f"{'N':>8} {'time s':>8} {'img/s':>8} {'input MB':>9} {'RSS before':>11} {'peak MB':>8} "
          f"{'output MB':>10} {'working MB':>11}")
    rows = []
    for n in a.n:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--n", str(n), "--arch", a.arch,
               "--members", str(a.members), "--threads", str(a.threads), "--targets", *a.targets]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"worker for N={n} failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{n:>8} {r['seconds']:>8.1f} {n / r['seconds']:>8.0f} {r['input_mb']:>9.0f} {r['rss_before_mb']:>11.0f} "
              f"{r['peak_mb']:>8.0f} {r['output_mb']:>10.0f} {r['working_mb']:>11.1f}", flush=True)
    print(f"data: {rows[0]['data']}, tiled; GEMM {rows[0]['gemm']}; peak = max RSS sampled every 5 ms during the call;"
          " working = peak - RSS before - output")
    if len(rows) > 1:
        w = [r["working_mb"] for r in rows]
        print(f"working memory beyond input and output: {min(w):.1f} .. {max(w):.1f} MB over N = "
              f"{rows[0]['n']:,} .. {rows[-1]['n']:,} (the output grows {rows[-1]['output_mb'] / rows[0]['output_mb']:.0f}x)")


if __name__ == "__main__":
    main()
