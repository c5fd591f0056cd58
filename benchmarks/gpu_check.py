#!/usr/bin/env python3
"""The GPU check of uqattr's CUDA backend: one prepared script for a lent GPU machine.

    python benchmarks/gpu_check.py [--quick] [--no-torch] [--no-build] [--device N]

1. Builds the extension in place if needed (nvcc found: ``setup.py build_ext --inplace`` with
   ``UQATTR_CUDA=1``, a no-op when up to date; the script then restarts itself). Without a
   usable GPU it stops at once: "no GPU", exit status 2.
2. Checks CUDA against the CPU core, with the device's workspaces and the returned arrays
   poisoned with NaN before every call (``CudaModel.poison``) so that unwritten elements show:
   * random small networks (odd sizes, KxK kernels, pools first and last, fc only): logits,
     probabilities, the uncertainty decomposition, input gradients of all six targets through
     the ensemble and through one member, vector-Jacobian products, parameter gradients, one
     SGD and one Adam step, and resident-data training against single steps (bit for bit);
   * MNIST with an ensemble trained on the GPU: probabilities and logits, the decomposition,
     calibration metrics, 3-map saliency (total / epistemic / aleatoric) and one member's
     saliency, parameter gradients; identical predicted classes on the test set; training on
     the GPU against the CPU recipe, and deterministic.
   A check passes when ``||gpu - cpu|| / ||cpu|| < 1e-4`` (training over many steps: 1e-3,
   float rounding grows step by step) and everything is finite.
3. Times training (5 members x 3 epochs on the 60,000 MNIST training images, batch 128, Adam),
   prediction and 3-map saliency on 10,000 test images, beside PyTorch on the same GPU when
   it is importable (the same architecture conv32-pool-conv64-pool-fc128-fc10, the same
   initial weights, data order, Adam and learning-rate schedule; PyTorch's default settings,
   which allow TF32 in cuDNN convolutions; uqattr runs in FP32).
4. Prints a short table last. Exit status 0: every check passed; 1: a check failed; 2: no GPU.

``--quick`` trains 1 epoch on 10,000 images and compares on 2,000 test images (about a
minute on an H200 once built). Needs NumPy, and the MNIST files (``UQATTR_DATA`` pointing at
the folder that holds ``mnist/``, or uqattr's cache); PyTorch is optional.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python"))  # the source tree's package (built in place)

TOL = 1e-4        # every forward, backward, input-gradient and metric output
TRAIN_TOL = 1e-3  # weights after several optimizer steps


def log(msg):
    print(f"gpu_check: {msg}", flush=True)


# ---- 1. build if needed, or stop without a GPU ----------------------------------------------------

def _nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _extension_files():
    folder = os.path.join(REPO, "python", "uqattr")
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("_uqattr") and f.endswith(".so")]


def _gpu_visible():
    """An NVIDIA driver with a device, seen without uqattr (before building one)."""
    if os.path.isdir("/proc/driver/nvidia/gpus") and os.listdir("/proc/driver/nvidia/gpus"):
        return True
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
            return res.returncode == 0 and "GPU" in res.stdout
        except (OSError, subprocess.SubprocessError):
            return False
    return os.path.exists("/dev/nvidia0")


def _build(force=False):
    """Builds in place with CUDA required; True if the extension file changed."""
    before = {f: os.path.getmtime(f) for f in _extension_files()}
    cmd = [sys.executable, "setup.py", "-q", "build_ext", "--inplace"] + (["--force"] if force else [])
    if shutil.which("flock"):
        cmd = ["flock", "/tmp/uqattr-build.lock"] + cmd
    log("building: " + " ".join(cmd) + " (UQATTR_CUDA=1)")
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, UQATTR_CUDA="1"))
    if res.returncode:
        log(f"FAIL: the build failed (exit status {res.returncode})")
        sys.exit(1)
    after = {f: os.path.getmtime(f) for f in _extension_files()}
    log(f"build done in {time.perf_counter() - t0:.0f} s")
    return after != before


def _restart(args):
    argv = [sys.executable, os.path.abspath(__file__)] + [a for a in sys.argv[1:] if a != "--no-build"] + ["--no-build"]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def ensure_built_and_gpu(args):
    """Returns the imported uqattr with a usable GPU, or exits (2: no GPU)."""
    try:
        import uqattr
        compiled = uqattr.build_info()["cuda_compiled"]
    except ImportError as e:
        uqattr, compiled = None, False
        log(f"uqattr does not import ({e})")
    if compiled:
        count, why = uqattr._uqattr.cuda_probe()
        if count == 0:
            log(f"no GPU: {why}. Nothing to check here; run this on a machine with an NVIDIA GPU.")
            sys.exit(2)
        if not args.no_build and _nvcc() and _build():
            _restart(args)
        return uqattr
    why = "this build of uqattr has no CUDA backend" if uqattr else "uqattr is not built"
    if not _gpu_visible():
        log(f"no GPU: no NVIDIA driver or device found ({why}; nothing built). "
            "Run this on a machine with an NVIDIA GPU.")
        sys.exit(2)
    if args.no_build:
        log(f"FAIL: a GPU is here but {why}, even after building (did nvcc fail?)")
        sys.exit(1)
    if not _nvcc():
        log(f"no GPU usable: {why} and no CUDA toolkit (nvcc; set CUDA_HOME) to build one with")
        sys.exit(2)
    _build(force=uqattr is not None)  # a CPU-only build looks up to date: rebuild it all
    _restart(args)


# ---- checks ------------------------------------------------------------------------------------------

class Checks:
    def __init__(self):
        self.results = []  # (name, ok, detail)

    def close(self, name, got, want, tol=TOL):
        import numpy as np
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            return self.record(name, False, f"shape {got.shape} != {want.shape}")
        if not np.all(np.isfinite(got)):
            return self.record(name, False, f"{int((~np.isfinite(got)).sum())} non-finite values (unwritten?)")
        norm = np.linalg.norm(want)
        err = float(np.linalg.norm(got - want) / norm) if norm > 0 else float(np.linalg.norm(got))
        return self.record(name, err < tol, f"rel err {err:.2e} (< {tol:g})")

    def equal(self, name, got, want):
        import numpy as np
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return self.record(name, False, f"shape {got.shape} != {want.shape}")
        diff = int(np.sum(got != want))
        return self.record(name, diff == 0, "identical" if diff == 0 else f"{diff} of {got.size} differ")

    def record(self, name, ok, detail):
        self.results.append((name, bool(ok), detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return ok

    def run(self, name, fn):
        """Runs a group of checks; an exception is a failed check, not the end of the script."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report and go on
            import traceback
            traceback.print_exc()
            self.record(name, False, f"raised {type(e).__name__}: {e}")

    @property
    def failed(self):
        return [r for r in self.results if not r[1]]


RANDOM_NETS = [
    ("conv4-pool-fc10", (1, 28, 28)),
    ("conv3k5-conv5-pool-fc7-fc3", (2, 9, 11)),
    ("pool-conv6k1-pool-fc5", (3, 13, 7)),
    ("fc16-fc8-fc4", (1, 5, 6)),
    ("conv8-pool-conv4k3-pool-pool-fc2", (1, 17, 16)),
    ("conv32-pool-conv64-pool-fc128-fc10", (1, 28, 28)),
]


def check_random_networks(checks, device):
    import numpy as np
    from uqattr import _uqattr
    from uqattr.ensemble import member_seed

    for spec, in_shape in RANDOM_NETS:
        print(f"random network {spec} on {in_shape}:", flush=True)

        def one(spec=spec, in_shape=in_shape):
            M, n = 3, 37
            rng = np.random.default_rng(0)
            params = np.stack([_uqattr.init_params(spec, member_seed(1, k), in_shape=in_shape) for k in range(M)])
            params *= np.float32(2.0)  # varied ReLU and max-pool patterns
            x = rng.normal(0.5, 0.5, size=(n,) + in_shape).astype(np.float32)
            C = _uqattr.arch_layers(spec, in_shape=in_shape)["n_classes"]
            dev = _uqattr.CudaModel(spec, params, in_shape=in_shape, device=device)
            dev.poison = True
            tag = spec.split("-")[0] + f"..{spec.split('-')[-1]}"
            for logits in (True, False):
                cpu = _uqattr.predict(spec, params, x, logits=logits, in_shape=in_shape)
                checks.close(f"{tag} {'logits' if logits else 'probs'}", dev.predict(x, logits=logits, batch_size=8),
                             cpu)
            probs = _uqattr.predict(spec, params, x, in_shape=in_shape)
            d, d_cpu = dev.decompose(x, batch_size=16), _uqattr.decompose(probs)
            for key in ("mean_probs", "max_prob", "total", "aleatoric", "epistemic"):
                checks.close(f"{tag} decompose {key}", d[key], d_cpu[key])
            checks.equal(f"{tag} decompose pred", d["pred"], d_cpu["pred"])
            classes = rng.integers(0, C, n)
            targets = [(0, None), (1, None), (2, None), (3, None), (4, classes), (5, classes[::-1].copy())]
            names = ["total", "aleatoric", "epistemic", "max_prob", "prob", "logit"]
            for member in (None, 1):
                p = params if member is None else params[member:member + 1]
                g_cpu, v_cpu = _uqattr.input_gradients(spec, p, x, targets, in_shape=in_shape)
                g, v = dev.input_gradients(x, targets, chunk=5, member=member)
                who = "ensemble" if member is None else f"member {member}"
                for t, name in enumerate(names):
                    if member is not None and name == "epistemic":
                        checks.record(f"{tag} {who} input grad epistemic", np.all(g[:, t] == 0) and np.all(v[:, t] == 0),
                                      "zero for one network")
                        continue
                    checks.close(f"{tag} {who} input grad {name}", g[:, t], g_cpu[:, t])
                    checks.close(f"{tag} {who} value {name}", v[:, t], v_cpu[:, t])
            dlogits = rng.normal(size=(M, n, 2, C)).astype(np.float32)
            cpu = sum(_uqattr.vjp(spec, params[m:m + 1], x, dlogits[m], in_shape=in_shape) for m in range(M))
            checks.close(f"{tag} vjp", dev.vjp(x, dlogits, chunk=6), cpu)
            B = 11
            y = rng.integers(0, C, M * B)
            xb = np.ascontiguousarray(x[:M * B]) if n >= M * B else rng.random((M * B,) + in_shape, dtype=np.float32)
            loss, grads = dev.gradients(xb, y)
            trainer = _uqattr.Trainer(spec, B, in_shape=in_shape)
            for m in range(M):
                l_cpu, g_m = trainer.gradients(params[m], xb[m * B:(m + 1) * B], y[m * B:(m + 1) * B])
                checks.close(f"{tag} member {m} parameter gradients", grads[m], g_m)
                checks.close(f"{tag} member {m} loss", loss[m], l_cpu)
            for optimizer in ("sgd", "adam"):
                dev.set_params(params)
                dev.set_optimizer(optimizer, weight_decay=1e-3)
                tr = _uqattr.Trainer(spec, B, optimizer=optimizer, weight_decay=1e-3, in_shape=in_shape)
                cpu_p, mom, var = params.copy(), np.zeros_like(params), np.zeros_like(params)
                ls, ok = dev.train_step(xb, y, 1, 1e-3)
                for m in range(M):
                    sl = slice(m * B, (m + 1) * B)
                    l_cpu, c_cpu = tr.step(cpu_p[m], mom[m], var[m], 1, xb[sl], y[sl], 1e-3)
                    checks.close(f"{tag} {optimizer} step member {m} loss", ls[m], l_cpu)
                    checks.equal(f"{tag} {optimizer} step member {m} correct", ok[m], c_cpu)
                checks.close(f"{tag} {optimizer} step weights", dev.get_params(), cpu_p)
                m_dev, v_dev = dev.optimizer_state()
                checks.close(f"{tag} {optimizer} step first moment", m_dev, mom)
                if optimizer == "adam":
                    checks.close(f"{tag} adam step second moment", v_dev, var)
            # resident data + each member's order == the same rows as single steps, bit for bit
            a = _uqattr.CudaModel(spec, params, in_shape=in_shape, device=device)
            b = _uqattr.CudaModel(spec, params, in_shape=in_shape, device=device)
            a.poison = b.poison = True
            orders = np.stack([_uqattr.permutation(n, member_seed(1, k), stream=1) for k in range(M)])
            ys = rng.integers(0, C, n)
            lrs = np.linspace(2e-3, 1e-4, math.ceil(n / 8)).astype(np.float32)
            a.set_optimizer("adam")
            b.set_optimizer("adam")
            a.set_data(x, ys)
            a.set_orders(orders)
            a.train_steps(0, lrs, 8, 1)
            la, ca = a.epoch_stats()
            lb, cb = np.zeros(M), np.zeros(M, np.int64)
            for s in range(len(lrs)):
                rows = orders[:, s * 8:(s + 1) * 8].ravel()
                l, c = b.train_step(x[rows], ys[rows], s + 1, float(lrs[s]))
                lb, cb = lb + l, cb + c
            checks.equal(f"{tag} resident training = single steps (weights)", a.get_params(), b.get_params())
            checks.close(f"{tag} resident training loss sums", la, lb, tol=1e-12)
            checks.equal(f"{tag} resident training correct counts", ca, cb)

        checks.run(f"random network {spec}", one)


def check_mnist(checks, timings, args, data):
    import numpy as np
    import uqattr
    from uqattr import DEFAULT_ARCH, Ensemble, _uqattr, metrics

    x_train, y_train, x_test, y_test = data
    dev_name = f"cuda:{args.device}"
    M = 5
    epochs = 1 if args.quick else 3
    n_train = 10000 if args.quick else len(x_train)
    n_eval = 2000 if args.quick else len(x_test)
    n_sal_cpu = 100 if args.quick else 500
    xe, ye = np.ascontiguousarray(x_test[:n_eval]), np.ascontiguousarray(y_test[:n_eval])

    print(f"MNIST: training {M} members x {epochs} epochs on {n_train:,} images on the GPU", flush=True)
    model = Ensemble(DEFAULT_ARCH, members=M, seed=0, device=dev_name)
    init = model.params.copy()
    model.predict_proba(xe[:256])  # warm-up: context, cuBLAS, workspace
    t0 = time.perf_counter()
    model.fit(x_train[:n_train], y_train[:n_train], epochs=epochs, batch_size=128, progress=False)
    timings["train"] = time.perf_counter() - t0
    timings["train_what"] = f"train {M}x{epochs} ep, {n_train // 1000}k imgs"
    cpu = Ensemble.from_state_dicts(model.state_dicts(), DEFAULT_ARCH, model.in_shape, model.seed)
    dev = model._cuda

    # prediction: timed without poison, then checked with it
    model.predict_proba(xe)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        probs = model.predict_proba(xe)
        best = min(best, time.perf_counter() - t0)
    timings["predict"] = best
    timings["predict_what"] = f"predict {n_eval // 1000}k imgs, {M} members"
    acc = float((probs.mean(0).argmax(1) == ye).mean())
    log(f"GPU-trained ensemble: test accuracy {acc:.4f} on {n_eval:,} images")
    checks.record("MNIST trained ensemble accuracy", acc > (0.95 if args.quick else 0.98), f"{acc:.4f}")
    dev.poison = True
    print("MNIST: CUDA against the CPU (poisoned outputs)", flush=True)
    probs = model.predict_proba(xe)
    t0 = time.perf_counter()
    probs_cpu = cpu.predict_proba(xe)
    log(f"CPU prediction of {n_eval:,} images took {time.perf_counter() - t0:.1f} s")
    checks.close("MNIST probabilities", probs, probs_cpu)
    checks.equal("MNIST predicted classes (ensemble)", probs.mean(0).argmax(1), probs_cpu.mean(0).argmax(1))
    checks.equal("MNIST predicted classes (each member)", probs.argmax(2), probs_cpu.argmax(2))
    checks.close("MNIST logits", model.predict_logits(xe[:2000]), cpu.predict_logits(xe[:2000]))
    u, u_cpu = uqattr.uncertainty(model, xe), uqattr.decompose(probs_cpu)
    for key in ("mean_probs", "max_prob", "total", "aleatoric", "epistemic"):
        checks.close(f"MNIST uncertainty {key}", getattr(u, key), getattr(u_cpu, key))
    checks.equal("MNIST uncertainty pred", u.pred, u_cpu.pred)
    cal, cal_cpu = metrics.calibration(u.mean_probs, ye), metrics.calibration(u_cpu.mean_probs, ye)
    for key in ("accuracy", "nll", "brier", "ece"):
        checks.close(f"MNIST calibration {key}", getattr(cal, key), getattr(cal_cpu, key))
    noise = np.random.default_rng(0).random((1000, 1, 28, 28), dtype=np.float32)
    un, un_cpu = uqattr.uncertainty(model, noise), uqattr.uncertainty(cpu, noise)
    ood, ood_cpu = metrics.ood_metrics(u.epistemic, un.epistemic), metrics.ood_metrics(u_cpu.epistemic, un_cpu.epistemic)
    for key in ("auroc", "aupr_in", "aupr_out"):  # (fpr95 sits on one threshold: a near-tie may move it)
        checks.close(f"MNIST vs noise OOD {key} (epistemic)", ood[key], ood_cpu[key])

    targets = ["total", "epistemic", "aleatoric"]
    xs = np.ascontiguousarray(xe[:n_sal_cpu])
    sal = uqattr.Saliency(model).attribute(xs, targets)
    sal_cpu = uqattr.Saliency(cpu).attribute(xs, targets)
    for t in targets:
        checks.close(f"MNIST saliency {t} ({n_sal_cpu} images)", sal[t], sal_cpu[t])
    g, v = uqattr.input_gradients(model, xs, ["max_prob", "logit:3", 7], member=2)
    g_cpu, v_cpu = uqattr.input_gradients(cpu, xs, ["max_prob", "logit:3", 7], member=2)
    for key in g_cpu:
        checks.close(f"MNIST member 2 input gradient {key}", g[key], g_cpu[key])
        checks.close(f"MNIST member 2 value {key}", v[key], v_cpu[key])
    B = 128
    xb, yb = np.ascontiguousarray(x_train[:M * B]), np.ascontiguousarray(y_train[:M * B])
    loss, grads = dev.gradients(xb, yb)
    trainer = _uqattr.Trainer(DEFAULT_ARCH, B)
    for m in range(M):
        l_cpu, g_m = trainer.gradients(cpu.params[m], xb[m * B:(m + 1) * B], yb[m * B:(m + 1) * B])
        checks.close(f"MNIST member {m} parameter gradients", grads[m], g_m)
        checks.close(f"MNIST member {m} loss", loss[m], l_cpu)
    dev.poison = False

    # saliency timing (3 maps through all members)
    uqattr.Saliency(model).attribute(xe[:256], targets)
    t0 = time.perf_counter()
    uqattr.Saliency(model).attribute(xe, targets)
    timings["saliency"] = time.perf_counter() - t0
    timings["saliency_what"] = f"saliency 3 maps, {n_eval // 1000}k imgs"

    print("MNIST: training on the GPU against the CPU recipe, and determinism", flush=True)
    xt, yt = x_train[:600], y_train[:600]
    a = Ensemble(DEFAULT_ARCH, members=2, seed=11, device=dev_name).fit(xt, yt, epochs=2, batch_size=128,
                                                                          progress=False)
    c = Ensemble(DEFAULT_ARCH, members=2, seed=11).fit(xt, yt, epochs=2, batch_size=128, progress=False)
    checks.close("fit on the GPU vs the CPU (10 Adam steps, weights)", a.params, c.params, tol=TRAIN_TOL)
    checks.close("fit on the GPU vs the CPU (loss history)", [h["loss"] for h in a.history],
                 [h["loss"] for h in c.history])
    n_det = 5000 if args.quick else 20000
    runs = [Ensemble(DEFAULT_ARCH, members=3, seed=5, device=dev_name).fit(
        x_train[:n_det], y_train[:n_det], epochs=1, batch_size=128, progress=False) for _ in range(2)]
    checks.equal(f"GPU training deterministic (3 members, 1 epoch on {n_det:,})", runs[0].params, runs[1].params)
    return model, init


# ---- PyTorch on the same GPU --------------------------------------------------------------------------

def torch_baseline(checks, timings, args, data, model, init):
    import numpy as np
    import torch
    from torch import nn
    from uqattr import _uqattr
    from uqattr.ensemble import lr_at, member_seed

    x_train, y_train, x_test, y_test = data
    device = torch.device(f"cuda:{args.device}")
    M = model.members
    epochs = 1 if args.quick else 3
    n_train = 10000 if args.quick else len(x_train)
    n_eval = 2000 if args.quick else len(x_test)
    log(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(device)} "
        f"(cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmul TF32 "
        f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")

    def net():
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)

    names = {"conv1": "0", "conv2": "3", "fc1": "7", "fc2": "9"}

    def load(module, sd):
        module.load_state_dict({f"{names[k.split('.')[0]]}.{k.split('.')[1]}": torch.from_numpy(np.array(v))
                                for k, v in sd.items()})

    # same weights: PyTorch's forward against uqattr's (FP32 throughout)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    xe = torch.from_numpy(np.ascontiguousarray(x_test[:n_eval])).to(device)
    with torch.no_grad():
        nets = []
        for sd in model.state_dicts():
            nets.append(net().eval())
            load(nets[-1], sd)
        p_torch = torch.stack([torch.softmax(n(xe), 1) for n in nets]).cpu().numpy()
    checks.close("PyTorch with uqattr's trained weights: probabilities", p_torch,
                 model.predict_proba(x_test[:n_eval]), tol=1e-3)
    torch.backends.cudnn.allow_tf32 = tf32

    xt = torch.from_numpy(np.ascontiguousarray(x_train[:n_train])).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y_train[:n_train])).long().to(device)
    steps_per_epoch = math.ceil(n_train / 128)
    total = steps_per_epoch * epochs
    members = []
    for k in range(M):  # uqattr's initial weights and each member's data order
        members.append(net())
        load(members[-1], {key: value for key, value in _state_dict(model, init[k]).items()})
    orders = [[torch.from_numpy(_uqattr.permutation(n_train, member_seed(model.seed, k), stream=e + 1)).to(device)
               for e in range(epochs)] for k in range(M)]
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for k, module in enumerate(members):
        module.train()
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        step = 0
        for e in range(epochs):
            order = orders[k][e]
            for i in range(0, n_train, 128):
                idx = order[i:i + 128]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, 3e-3, "cosine")
                step += 1
                loss = nn.functional.cross_entropy(module(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    torch.cuda.synchronize(device)
    timings["torch_train"] = time.perf_counter() - t0
    for module in members:
        module.eval()

    def predict():
        with torch.no_grad():
            out = torch.stack([torch.softmax(module(xe), 1) for module in members]).cpu().numpy()
        return out

    predict()
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        p = predict()
        best = min(best, time.perf_counter() - t0)
    timings["torch_predict"] = best
    acc = float((p.mean(0).argmax(1) == y_test[:n_eval]).mean())
    log(f"PyTorch-trained ensemble: test accuracy {acc:.4f}")
    checks.record("PyTorch-trained ensemble accuracy (sanity)", acc > (0.95 if args.quick else 0.98), f"{acc:.4f}")

    def saliency(x):
        maps = []
        for i in range(0, len(x), 1000):
            xb = x[i:i + 1000].clone().requires_grad_(True)
            p = torch.stack([torch.softmax(module(xb), 1) for module in members])
            pbar = p.mean(0)
            total_u = -(pbar * torch.log(pbar.clamp_min(1e-38))).sum(1)
            ale = -(p * torch.log(p.clamp_min(1e-38))).sum(2).mean(0)
            epi = total_u - ale
            grads = [torch.autograd.grad(t.sum(), xb, retain_graph=j < 2)[0] for j, t in enumerate((total_u, epi, ale))]
            maps.append(torch.stack(grads, 1).cpu())
        return torch.cat(maps).numpy()

    saliency(xe[:256])
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    saliency(xe)
    torch.cuda.synchronize(device)
    timings["torch_saliency"] = time.perf_counter() - t0


def _state_dict(model, row):
    """Per-layer arrays (state_dict names) of one member's flat parameter row."""
    import numpy as np
    out = {}
    for layer in model.layers:
        if layer["kind"] == "pool":
            continue
        for part in ("weight", "bias"):
            off, shape = layer[f"{part}_offset"], layer[f"{part}_shape"]
            out[f"{layer['name']}.{part}"] = np.array(row[off:off + int(np.prod(shape))]).reshape(shape)
    return out


# ---- main ----------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 epoch on 10,000 images, 2,000 test images")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--no-build", action="store_true", help="use the extension as it is")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    args = p.parse_args()
    t_start = time.perf_counter()
    uqattr = ensure_built_and_gpu(args)
    import numpy as np

    info = uqattr.build_info()
    dev = uqattr._uqattr.cuda_device_info(args.device)
    log(f"{dev['name']}, compute capability {dev['capability'][0]}.{dev['capability'][1]}, "
        f"{dev['total_memory'] / 2**30:.0f} GiB; CUDA {info['cuda_version']}; CPU core: GEMM {info['gemm']}, "
        f"{info['num_threads']} threads; NumPy {np.__version__}{'; quick' if args.quick else ''}")
    checks, timings = Checks(), {}

    print("random networks: CUDA against the CPU (poisoned outputs)", flush=True)
    check_random_networks(checks, args.device)

    data = None
    try:
        from uqattr import datasets
        x_train, y_train = datasets.load("mnist", "train")
        x_test, y_test = datasets.load("mnist", "test")
        data = (x_train, y_train, x_test, y_test)
    except (OSError, ValueError) as e:
        checks.record("MNIST data", False, f"not found ({e}); set UQATTR_DATA to the folder holding mnist/")
    model = init = None
    if data is not None:
        def mnist():
            nonlocal model, init
            model, init = check_mnist(checks, timings, args, data)
        checks.run("MNIST checks", mnist)

    torch_note = "skipped (--no-torch)" if args.no_torch else None
    if not args.no_torch and model is not None:
        try:
            import torch
            if not torch.cuda.is_available():
                torch_note = "not run: torch.cuda.is_available() is False"
        except ImportError:
            torch_note = "not run: PyTorch is not installed"
        if torch_note is None:
            checks.run("PyTorch baseline", lambda: torch_baseline(checks, timings, args, data, model, init))

    failed = checks.failed
    print()
    print(f"checks: {len(checks.results) - len(failed)} passed, {len(failed)} failed"
          + (f" (PyTorch {torch_note})" if torch_note else "") + f"; {time.perf_counter() - t_start:.0f} s in all")
    for name, _, detail in failed:
        print(f"  FAILED {name}: {detail}")

    def sec(key):
        return f"{timings[key]:.2f} s" if key in timings else "-"

    def ratio(key):
        a, b = timings.get(key), timings.get("torch_" + key)
        return f"{b / a:.2f}x" if a and b else "-"

    rows = [(timings.get(f"{k}_what", k), sec(k), sec("torch_" + k), ratio(k)) for k in ("train", "predict", "saliency")]
    header = ("", "uqattr CUDA", "PyTorch", "PyTorch / uqattr")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    print()
    for r in [header] + rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"{'PASS' if not failed else 'FAIL'}: {len(failed)} of {len(checks.results)} checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
