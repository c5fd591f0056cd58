"""Training and prediction throughput of uqattr against PyTorch (CPU).

Measures, for one architecture (default: uqattr's "conv32-pool-conv64-pool-fc128-fc10")
at the same batch size, optimizer (Adam, constant lr) and thread count:

  * training throughput in member-images/s (one network, a few hundred Adam
    steps on real MNIST images after a warm-up), for uqattr with each GEMM
    backend ("builtin", its own blocked GEMM, the default; "blas", the BLAS it
    was built with) and for PyTorch with the identical network;
  * prediction throughput in images/s (forward to the logits, batch 256;
    PyTorch in inference mode);
  * where a step's time goes (forward / forward+backward / whole step), per
    framework, and the achieved GFLOP/s against the machine's SGEMM rate
    (NumPy's float32 matmul as the reference; uqattr's built-in GEMM through a
    one-layer "fc4096" model), plus NumPy's GFLOP/s at the GEMM shapes of this
    network's layers.

Every contender runs in its own worker process (its own OpenMP and BLAS
runtimes, no spinning threads of one stealing cores from the other); the
workers take turns, round by round, so that a busy phase of a shared machine
hits all of them. Throughputs are printed as the best round (the least
disturbed) and the median round; ratios as best/best and as the median of the
per-round ratios. The summary table comes last.

PyTorch is optional (skipped with a note if not importable). Run from the
repository root:

    python benchmarks/bench_train.py                # ~2-3 minutes on 2 cores
    python benchmarks/bench_train.py --quick        # a smoke run, ~30 s
    UQATTR_DATA=/path/to/datasets python benchmarks/bench_train.py --threads 1
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (Samples, Stopwatch, Worker, flops_per_image, fmt_rate, fmt_ratio, import_uqattr,  # noqa: E402
                     layer_flops, load_line, load_mnist, paired_ratio, table, torch_available)

DEFAULT_ARCH = "conv32-pool-conv64-pool-fc128-fc10"


# ---------------------------------------------------------------------------------------------
# workers: each lives in its own process and answers ("method", kwargs) messages
# ---------------------------------------------------------------------------------------------

def _openblas_cores():
    """{library path: core name} of the OpenBLAS copies loaded in this process
    (Debian's OpenBLAS 0.3.21 does not know recent Xeons and falls back to
    "Prescott" SSE3 kernels unless OPENBLAS_CORETYPE is set)."""
    import ctypes
    found = {}
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return found
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("openblas_get_corename", "scipy_openblas_get_corename64_", "openblas_get_corename64_",
                    "scipy_openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                found[os.path.basename(path)] = fn().decode()
                break
    return found


class UqattrWorker:
    def __init__(self, cfg):
        import numpy as np
        self.np = np
        uqattr = import_uqattr()
        from uqattr import _uqattr
        self.uq, self.C = uqattr, _uqattr
        if cfg["threads"]:
            uqattr.set_num_threads(cfg["threads"])
        self.arch, self.B, self.lr = cfg["arch"], cfg["batch_size"], cfg["lr"]
        self.x, self.y, self.data_note = load_mnist(cfg["n_images"], seed=cfg["seed"])
        self.params = _uqattr.init_params(self.arch, 1)
        self.m = np.zeros_like(self.params)
        self.v = np.zeros_like(self.params)
        self.trainer = _uqattr.Trainer(self.arch, self.B, optimizer="adam")
        self.t = 0
        self.pos = 0
        self.backends = ["builtin"] + (["blas"] if uqattr.build_info()["blas"] else [])
        self.xp = self.x[:cfg["predict_images"]]

    def info(self):
        info = dict(self.uq.build_info())
        info.update(num_threads=self.uq.get_num_threads(), backends=self.backends, data=self.data_note,
                    openblas=_openblas_cores(), n_params=self.params.size,
                    layers=self.C.arch_layers(self.arch)["layers"],
                    OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", ""))
        return info

    def _batch(self):
        n = self.x.shape[0]
        if self.pos + self.B > n:
            self.pos = 0
        i = self.pos
        self.pos += self.B
        return self.x[i:i + self.B], self.y[i:i + self.B]

    def train(self, backend, steps):
        self.C.set_gemm_backend(backend)
        loss = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            xb, yb = self._batch()
            self.t += 1
            loss += self.trainer.step(self.params, self.m, self.v, self.t, xb, yb, self.lr)[0]
        dt = time.perf_counter() - t0
        return {"seconds": dt, "items": steps * self.B, "loss": loss / (steps * self.B)}

    def predict(self, backend, batch_size):
        self.C.set_gemm_backend(backend)
        with Stopwatch() as sw:
            self.C.predict(self.arch, self.params[None], self.xp, logits=True, batch_size=batch_size)
        return {"seconds": sw.seconds, "items": self.xp.shape[0]}

    def phases(self, backend, reps):
        """Best seconds per batch of: forward, forward + backward, whole Adam step."""
        C, B = self.C, self.B
        C.set_gemm_backend(backend)
        xb, yb = self.x[:8 * B], self.y[:B]
        best = {"forward": 1e9, "forward+backward": 1e9, "step": 1e9}
        p = self.params.copy()
        m, v = self.m.copy(), self.v.copy()
        for _ in range(reps):
            with Stopwatch() as sw:  # 8 batches in one call: the workspace allocation is paid once
                C.predict(self.arch, p[None], xb, logits=True, batch_size=B)
            best["forward"] = min(best["forward"], sw.seconds / 8)
            with Stopwatch() as sw:
                self.trainer.gradients(p, xb[:B], yb)
            best["forward+backward"] = min(best["forward+backward"], sw.seconds)
            with Stopwatch() as sw:
                self.trainer.step(p, m, v, self.t + 1, xb[:B], yb, self.lr)
            best["step"] = min(best["step"], sw.seconds)
        return best

    def gemm_probe(self, backend, n=4096, batch=256, reps=3):
        """GFLOP/s of a (batch x n) @ (n x n)^T GEMM through the core: the forward
        of an "fc{n}-fc10" model on (1, 64, 64) images (n = 4096), dominated by
        one GEMM that the core splits across its threads."""
        np, C = self.np, self.C
        C.set_gemm_backend(backend)
        side = int(round(n ** 0.5))
        arch = f"fc{n}-fc10"
        params = C.init_params(arch, 0, in_shape=(1, side, side))[None]
        x = np.random.default_rng(0).random((batch, 1, side, side), dtype=np.float32)
        flops = batch * (2 * side * side * n + 2 * n * 10)
        best = 1e9
        for _ in range(reps):
            with Stopwatch() as sw:
                C.predict(arch, params, x, logits=True, in_shape=(1, side, side), batch_size=batch)
            best = min(best, sw.seconds)
        return flops / best / 1e9

    def layer_probe(self, backend, reps=3, n=512):
        """Forward GFLOP/s of conv2 alone (im2col + GEMM 64x196x288 + bias + ReLU
        per image) as a "conv64-fc2" model on (32, 14, 14) inputs."""
        np, C = self.np, self.C
        C.set_gemm_backend(backend)
        arch, shape = "conv64-fc2", (32, 14, 14)
        params = C.init_params(arch, 0, in_shape=shape)[None]
        x = np.random.default_rng(0).random((n,) + shape, dtype=np.float32)
        flops = n * sum(f for _, _, f in layer_flops(C.arch_layers(arch, in_shape=shape)["layers"]))
        best = 1e9
        for _ in range(reps):
            with Stopwatch() as sw:
                C.predict(arch, params, x, logits=True, in_shape=shape, batch_size=256)
            best = min(best, sw.seconds)
        return flops / best / 1e9


class TorchWorker:
    def __init__(self, cfg):
        import numpy as np
        import torch
        from torch import nn
        self.torch, self.nn = torch, nn
        uqattr = import_uqattr()
        from uqattr import _uqattr
        threads = cfg["threads"] or uqattr.get_num_threads()
        torch.set_num_threads(threads)
        self.arch, self.B = cfg["arch"], cfg["batch_size"]
        x, y, self.data_note = load_mnist(cfg["n_images"], seed=cfg["seed"])
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.xp = self.x[:cfg["predict_images"]]
        layers = _uqattr.arch_layers(self.arch)["layers"]
        self.model = self._build(layers)
        # start from the same weights as uqattr (same layouts)
        params = _uqattr.init_params(self.arch, 1)
        with torch.no_grad():
            sd = {}
            for L in layers:
                if L["kind"] == "pool":
                    continue
                for part in ("weight", "bias"):
                    off, shape = L[f"{part}_offset"], tuple(L[f"{part}_shape"])
                    sd[f"{L['name']}.{part}"] = torch.from_numpy(params[off:off + int(np.prod(shape))].reshape(shape))
            names = [k for k, _ in self.model.named_parameters()]
            for (name, p), key in zip(self.model.named_parameters(), sd):
                p.copy_(sd[key])
            assert len(names) == len(sd)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.loss_fn = nn.CrossEntropyLoss(reduction="mean")
        self.pos = 0
        self.threads = threads

    def _build(self, layers):
        nn = self.nn
        mods, flat = [], False
        for L in layers:
            if L["kind"] == "conv":
                oc, ic, k, _ = L["weight_shape"]
                mods.append(nn.Conv2d(ic, oc, k, padding=k // 2))
            elif L["kind"] == "pool":
                mods.append(nn.MaxPool2d(2))
            else:
                if not flat:
                    mods.append(nn.Flatten())
                    flat = True
                o, i = L["weight_shape"]
                mods.append(nn.Linear(i, o))
            if L["relu"]:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)

    def info(self):
        t = self.torch
        return {"version": t.__version__, "threads": t.get_num_threads(), "data": self.data_note,
                "mkldnn": t.backends.mkldnn.is_available(), "model": str(self.model).replace("\n", " "),
                "n_params": sum(p.numel() for p in self.model.parameters())}

    def _batch(self):
        n = self.x.shape[0]
        if self.pos + self.B > n:
            self.pos = 0
        i = self.pos
        self.pos += self.B
        return self.x[i:i + self.B], self.y[i:i + self.B]

    def _step(self, xb, yb):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(xb), yb)
        loss.backward()
        self.opt.step()
        return loss

    def train(self, backend, steps):
        self.model.train()
        loss = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            loss += self._step(*self._batch()).item()
        dt = time.perf_counter() - t0
        return {"seconds": dt, "items": steps * self.B, "loss": loss / steps}

    def predict(self, backend, batch_size):
        t = self.torch
        self.model.eval()
        with t.inference_mode(), Stopwatch() as sw:
            for i in range(0, self.xp.shape[0], batch_size):
                self.model(self.xp[i:i + batch_size])
        return {"seconds": sw.seconds, "items": self.xp.shape[0]}

    def phases(self, backend, reps):
        import copy
        t, B = self.torch, self.B
        model = copy.deepcopy(self.model)
        opt = t.optim.Adam(model.parameters(), lr=1e-3)
        xb, yb = self.x[:B], self.y[:B]
        best = {"forward": 1e9, "forward+backward": 1e9, "step": 1e9}
        for _ in range(reps):
            with t.no_grad(), Stopwatch() as sw:
                model(xb)
            best["forward"] = min(best["forward"], sw.seconds)
            with Stopwatch() as sw:
                opt.zero_grad(set_to_none=True)
                self.loss_fn(model(xb), yb).backward()
            best["forward+backward"] = min(best["forward+backward"], sw.seconds)
            with Stopwatch() as sw:
                opt.zero_grad(set_to_none=True)
                self.loss_fn(model(xb), yb).backward()
                opt.step()
            best["step"] = min(best["step"], sw.seconds)
        return best


class NumpyWorker:
    """float32 GEMM rates of NumPy's own OpenBLAS (threads set by the parent
    through OPENBLAS_NUM_THREADS before NumPy loads)."""

    def __init__(self, cfg):
        import numpy as np
        self.np = np

    def info(self):
        return {"version": self.np.__version__, "openblas": _openblas_cores(),
                "threads": os.environ.get("OPENBLAS_NUM_THREADS", "")}

    def gemm(self, shapes, min_seconds=0.25):
        """{(transA, transB, M, N, K): GFLOP/s}, best of timed repeats; C = op(A) @ op(B)."""
        np = self.np
        rng = np.random.default_rng(0)
        out = {}
        for ta, tb, M, N, K in shapes:
            a = rng.random((K, M) if ta else (M, K), dtype=np.float32)
            b = rng.random((N, K) if tb else (K, N), dtype=np.float32)
            A, Bm = (a.T if ta else a), (b.T if tb else b)
            c = np.empty((M, N), np.float32)
            np.matmul(A, Bm, out=c)
            reps = 1
            while True:  # calibrate a repeat count of about min_seconds / 5
                with Stopwatch() as sw:
                    for _ in range(reps):
                        np.matmul(A, Bm, out=c)
                if sw.seconds > min_seconds / 5 or reps > 1 << 20:
                    break
                reps *= 4
            best = sw.seconds / reps
            for _ in range(4):
                with Stopwatch() as sw:
                    for _ in range(reps):
                        np.matmul(A, Bm, out=c)
                best = min(best, sw.seconds / reps)
            out[(ta, tb, M, N, K)] = 2.0 * M * N * K / best / 1e9
        return out


WORKERS = {"uqattr": UqattrWorker, "torch": TorchWorker, "numpy": NumpyWorker}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=DEFAULT_ARCH, help="architecture spec (default %(default)s)")
    ap.add_argument("--batch-size", type=int, default=128, help="training batch (default %(default)s)")
    ap.add_argument("--predict-batch", type=int, default=256, help="prediction batch (default %(default)s)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per contender per round (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up steps per contender (default %(default)s)")
    ap.add_argument("--predict-images", type=int, default=4096, help="images per prediction round (default %(default)s)")
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for uqattr and PyTorch (default: uqattr.get_num_threads())")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default="builtin,blas", help="uqattr GEMM backends to measure (default %(default)s)")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--no-gemm", action="store_true", help="skip the GEMM / GFLOP/s section")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 10 steps, 1024 predict images")
    ap.add_argument("--openblas-coretype", default=None, metavar="NAME",
                    help="OPENBLAS_CORETYPE for uqattr's worker (e.g. SkylakeX), which its 'blas' backend reads; "
                         "default: the environment as it is")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup, args.predict_images = 10, 2, 2, 1024
    t_start = time.perf_counter()
    n_images = max(args.predict_images, args.batch_size * 64, 8 * args.batch_size)
    cfg = {"arch": args.arch, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
           "threads": args.threads, "n_images": n_images, "predict_images": args.predict_images}

    # ---- start the workers ------------------------------------------------------------------
    uq_env = {} if args.openblas_coretype is None else {"OPENBLAS_CORETYPE": args.openblas_coretype}
    uq = Worker(WORKERS["uqattr"], cfg, uq_env)
    info = uq("info")
    threads = args.threads or info["num_threads"]
    backends = [b for b in args.backends.split(",") if b in info["backends"]]
    for b in args.backends.split(","):
        if b not in info["backends"]:
            print(f"note: uqattr backend {b!r} not built in; skipped")
    th = None
    if args.no_torch:
        print("note: PyTorch skipped (--no-torch)")
    elif not torch_available():
        print("note: PyTorch is not importable in this environment; PyTorch columns skipped "
              "(pip install torch to compare)")
    else:
        th = Worker(WORKERS["torch"], cfg)
    fwd_flops, train_flops = flops_per_image(info["layers"])

    print(f"uqattr: gemm default {info['gemm']!r}, BLAS {info['blas'] or 'none'}, OpenMP {info['openmp']}, "
          f"{threads} threads, cflags {info['cflags']}")
    if info["openblas"]:
        print(f"        OpenBLAS core in uqattr's process: {info['openblas']}"
              f"{' (OPENBLAS_CORETYPE=' + info['OPENBLAS_CORETYPE'] + ')' if info['OPENBLAS_CORETYPE'] else ''}")
    if th is not None:
        ti = th("info")
        print(f"PyTorch {ti['version']}: {ti['threads']} threads, oneDNN {ti['mkldnn']}; "
              f"{ti['n_params']:,} parameters (uqattr: {info['n_params']:,})")
    print(f"arch {args.arch!r}, batch {args.batch_size}, Adam lr {args.lr:g}; data: {info['data']}")
    print(f"FLOPs per image: forward {fwd_flops / 1e6:.2f} M, training step {train_flops / 1e6:.2f} M "
          f"(2 x MACs; backward = weight grads + input grads but the first layer's)")
    print(f"load average at start: {load_line()}")
    print(f"{args.rounds} interleaved rounds of {args.steps} steps (after {args.warmup} warm-up) per contender; "
          f"best round (median round)\n", flush=True)

    contenders = [(f"uqattr({b})", uq, b) for b in backends]
    if th is not None:
        contenders.append(("PyTorch", th, None))

    # ---- training ----------------------------------------------------------------------------
    train = {name: Samples() for name, _, _ in contenders}
    losses = {name: [] for name, _, _ in contenders}
    for name, w, b in contenders:
        w("train", backend=b, steps=args.warmup)
    for r in range(args.rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for name, w, b in order:
            res = w("train", backend=b, steps=args.steps)
            train[name].add(res["items"], res["seconds"])
            losses[name].append(res["loss"])
        print(f"  train round {r + 1}/{args.rounds}: " + ", ".join(
            f"{name} {train[name].rates[-1]:,.0f}" for name, _, _ in contenders) + " member-img/s", flush=True)

    print("\nTraining throughput (member-images/s; mean loss of the last round as a sanity check):")
    ref = train.get("PyTorch")
    rows = []
    for name, _, _ in contenders:
        s = train[name]
        gf = s.best * train_flops / 1e9
        row = [name, fmt_rate(s.best), fmt_rate(s.median), f"{1e3 * args.batch_size / s.best:.1f}", f"{gf:.1f}",
               f"{losses[name][-1]:.3f}"]
        if ref:
            row += [fmt_ratio(s.best / ref.best), fmt_ratio(paired_ratio(s, ref))]
        rows.append(row)
    hdr = ["", "best", "median", "ms/step", "GFLOP/s", "loss"]
    if ref:
        hdr += ["vs PyTorch (best)", "(per-round median)"]
    print(table(hdr, rows), flush=True)

    # ---- prediction --------------------------------------------------------------------------
    pred = {name: Samples() for name, _, _ in contenders}
    for name, w, b in contenders:
        w("predict", backend=b, batch_size=args.predict_batch)
    p_rounds = max(2, min(args.rounds, 3))
    for r in range(p_rounds):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for name, w, b in order:
            res = w("predict", backend=b, batch_size=args.predict_batch)
            pred[name].add(res["items"], res["seconds"])
    print(f"\nPrediction throughput (images/s, {args.predict_images} images in batches of {args.predict_batch}, "
          f"logits; {p_rounds} rounds):")
    ref = pred.get("PyTorch")
    rows = []
    for name, _, _ in contenders:
        s = pred[name]
        row = [name, fmt_rate(s.best), fmt_rate(s.median), f"{s.best * fwd_flops / 1e9:.1f}"]
        if ref:
            row += [fmt_ratio(s.best / ref.best), fmt_ratio(paired_ratio(s, ref))]
        rows.append(row)
    hdr = ["", "best", "median", "GFLOP/s"] + (["vs PyTorch (best)", "(per-round median)"] if ref else [])
    print(table(hdr, rows), flush=True)

    # ---- where a step's time goes ------------------------------------------------------------
    print(f"\nOne batch of {args.batch_size}, ms (GFLOP/s), best of 7 interleaved repeats each of: forward, "
          f"forward+backward, whole step; backward and 'optimizer etc.' are differences of those (noisy)")
    rows = []
    bwd_flops = train_flops - fwd_flops
    for name, w, b in contenders:
        ph = w("phases", backend=b, reps=7)
        f, fb, st = ph["forward"], ph["forward+backward"], ph["step"]
        B = args.batch_size
        rows.append([name, f"{1e3 * f:.1f} ({B * fwd_flops / f / 1e9:.0f})",
                     f"{1e3 * (fb - f):.1f} ({B * bwd_flops / max(fb - f, 1e-9) / 1e9:.0f})",
                     f"{1e3 * fb:.1f}", f"{1e3 * max(st - fb, 0.0):.1f}", f"{1e3 * st:.1f}"])
    print(table(["", "forward", "backward", "fwd+bwd", "optimizer etc.", "step"], rows), flush=True)

    # ---- GEMM rates --------------------------------------------------------------------------
    if not args.no_gemm:
        print(f"\nSGEMM reference (GFLOP/s, best of repeats):")
        big = [(0, 0, 2048, 2048, 2048), (0, 1, 256, 4096, 4096)]
        shapes = [  # (transA, transB, M, N, K): the GEMMs of one image / one batch of the default network
            ("conv1 fwd   W(32x9) @ col(9x784)", (0, 0, 32, 784, 9)),
            ("conv2 fwd   W(64x288) @ col(288x196)", (0, 0, 64, 196, 288)),
            ("conv2 dW    g(64x196) @ col^T(196x288)", (0, 1, 64, 288, 196)),
            ("conv2 dcol  W^T(288x64) @ g(64x196)", (1, 0, 288, 196, 64)),
            ("conv1 dW    g(32x784) @ col^T(784x9)", (0, 1, 32, 9, 784)),
            ("fc1 fwd     x(128x3136) @ W^T(3136x128)", (0, 1, 128, 128, 3136)),
            ("fc1 dW      g^T(128x128) @ x(128x3136)", (1, 0, 128, 3136, 128)),
            ("fc1 dx      g(128x128) @ W(128x3136)", (0, 0, 128, 3136, 128)),
        ]
        np1 = Worker(WORKERS["numpy"], cfg, {"OPENBLAS_NUM_THREADS": "1"})
        one = np1("gemm", shapes=big[:1] + [s for _, s in shapes])
        np_info = np1("info")
        np1.close()
        npn = Worker(WORKERS["numpy"], cfg, {"OPENBLAS_NUM_THREADS": str(threads)})
        many = npn("gemm", shapes=big)
        npn.close()
        core = ", ".join(f"{k}: {v}" for k, v in np_info["openblas"].items()) or "?"
        print(f"  NumPy {np_info['version']} float32 matmul (its own OpenBLAS, {core}):")
        print(f"    2048^3:  {one[big[0]]:.0f} GFLOP/s on 1 thread, {many[big[0]]:.0f} on {threads} threads "
              f"(the machine's SGEMM peak for this comparison)")
        print(f"    256x4096x4096 (B^T): {many[big[1]]:.0f} GFLOP/s on {threads} threads")
        for b in backends:
            g = uq("gemm_probe", backend=b)
            c2 = uq("layer_probe", backend=b)
            print(f"  uqattr({b}): 256x4096x4096 (B^T) via an 'fc4096' forward: {g:.0f} GFLOP/s on {threads} threads; "
                  f"conv2 layer forward alone (im2col + GEMM + bias/ReLU, per-image GEMMs): {c2:.0f} GFLOP/s")
        print(f"  NumPy at this network's GEMM shapes, 1 thread (uqattr runs the conv GEMMs one image per thread):")
        for label, s in shapes:
            print(f"    {label:<42} M={s[2]:<4} N={s[3]:<4} K={s[4]:<4} {one[s]:6.0f} GFLOP/s")
        best_train = max(train[n].best for n, _, _ in contenders if n.startswith("uqattr"))
        print(f"  uqattr training achieves {best_train * train_flops / 1e9:.1f} GFLOP/s = "
              f"{100 * best_train * train_flops / 1e9 / many[big[0]]:.0f}% of NumPy's {threads}-thread SGEMM peak"
              + (f"; PyTorch {train['PyTorch'].best * train_flops / 1e9:.1f} GFLOP/s "
                 f"({100 * train['PyTorch'].best * train_flops / 1e9 / many[big[0]]:.0f}%)" if th else ""))
        print("  (GFLOP/s count a dense network's FLOPs; uqattr's conv backward skips the zero gradients behind "
              "its max-pools, so its backward and training rates are dense-equivalent rates, above the arithmetic "
              "it does)")

    uq.close()
    if th is not None:
        th.close()

    # ---- summary (last) ----------------------------------------------------------------------
    print(f"\nSummary ({threads} threads, batch {args.batch_size} train / {args.predict_batch} predict; "
          f"best round; total {time.perf_counter() - t_start:.0f} s):")
    ref_t, ref_p = train.get("PyTorch"), pred.get("PyTorch")
    rows = []
    for name, _, _ in contenders:
        rows.append([name, fmt_rate(train[name].best), fmt_rate(pred[name].best),
                     fmt_ratio(train[name].best / ref_t.best) if ref_t else "n/a",
                     fmt_ratio(pred[name].best / ref_p.best) if ref_p else "n/a"])
    print(table(["", "train member-img/s", "predict img/s", "train vs PyTorch", "predict vs PyTorch"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
