"""``uqattr report``: the whole study, reproduced section by section, in one go.

Writes into a folder ``OUT``:

* ``index.html`` — one page, every section in the study's order, figures as
  PNG files beside it, captions with the numbers;
* ``metrics.json`` — accuracy, NLL, ECE and Brier score of the single model
  and the ensemble on MNIST test, OOD-detection metrics (AUROC, AUPR-In,
  AUPR-Out, FPR@95) per OOD set and score, the editing numbers, timings;
* ``model.npz`` — the ensemble the report was made with, and ``model.json``
  (what it is: its recipe, or the file it came from, and its sha256).

Sections (numbering as in the study deck):

* 1.1 uncertainty maps (total, epistemic, aleatoric) on OOD images (EMNIST
  letters); 1.2 / 1.3 the most / least uncertain MNIST test images with their
  three maps; 1.4 the least uncertain images edited along the gradient of
  their total uncertainty (:func:`uqattr.edit.along_gradient`), original and
  edited side by side;
* 2.1-2.3 ensemble saliency maps (gradient of the ensemble's probability of its
  predicted class) on OOD, most and least uncertain images; 2.4-2.6 on the
  least uncertain images of one class at a time (4, 8, 5 by default); 2.7
  (beyond the deck) the blur test of every attribution method for each
  uncertainty (:mod:`uqattr.evaluate`): does removing what a map points at
  lower the uncertainty?
* 3.1-3.4 OOD detection on EMNIST letters, KMNIST, Omniglot and Fashion-MNIST:
  histograms of the single model's and the ensemble's max softmax probability
  and of the epistemic uncertainty, ID vs OOD, with AUROC; the OOD images the
  single model is most confident about;
* 4 beyond the deck: calibration (reliability diagrams), the OOD summary table
  and four attribution methods side by side.

The folder is written safely: everything is built in a temporary folder next
to ``OUT``; a new ``OUT`` is then that folder renamed, and an existing one gets
each file moved in with :func:`os.replace` (figures and model first,
``metrics.json`` and ``index.html`` last), so no reader ever sees a
half-written file. Without ``model_path`` the default ensemble is trained
and cached as ``OUT/model.npz``; a later report into the same folder reuses it
when ``OUT/model.json`` says it was trained with the same recipe and its
sha256 still matches.
"""
import hashlib
import html
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import datasets
from .attr import UNCERTAINTY_TARGETS
from .ensemble import DEFAULT_ARCH, Ensemble

#: Every section, in page order.
SECTIONS = ("1.1", "1.2", "1.3", "1.4", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "3.1", "3.2", "3.3",
            "3.4", "4")

#: OOD sections: dataset name, split, label.
OOD_SETS = {"3.1": ("emnist-letters", "test", "EMNIST"), "3.2": ("kmnist", "test", "KMNIST"),
            "3.3": ("omniglot", "evaluation", "Omniglot"), "3.4": ("fashion-mnist", "test", "Fashion-MNIST")}

#: Section titles (the study's slide titles; 2.4-2.6 get their class appended).
TITLES = {
    "1.1": "Results on OOD Data",
    "1.2": "Select and Visualize the Most Uncertain Images",
    "1.3": "Select and Visualize the Least Uncertain Images",
    "1.4": "If We Edited the Images with Least Uncertainty",
    "2.1": "Saliency Map of OOD Data",
    "2.2": "Saliency Map on the Most Uncertain Images",
    "2.3": "Saliency Map on the Least Uncertain Images",
    "2.4": "Saliency Map on the Least Uncertain Images",
    "2.5": "Saliency Map on the Least Uncertain Images",
    "2.6": "Saliency Map on the Least Uncertain Images",
    "2.7": "Beyond the Deck: Do the Maps Point at the Uncertainty? (Blur Test)",
    "3.1": "High Max Probability & Low Uncertainty on EMNIST",
    "3.2": "High Max Probability & Low Uncertainty on KMNIST",
    "3.3": "High Max Probability & Low Uncertainty on Omniglot",
    "3.4": "High Max Probability & Low Uncertainty on Fashion-MNIST",
    "4": "Beyond the Deck: Calibration, OOD Summary and Attribution Methods",
}
PARTS = {"1": "1. Hands-on: Uncertainty Attribution with Vanilla Gradients",
         "2": "2. How Does the Model Work: Saliency Map Plot",
         "3": "3. Out-of-Distribution Detection: Single Model vs Ensemble",
         "4": "4. Beyond the Deck"}

EMNIST_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAP_ORDER = ("total", "epistemic", "aleatoric")
CAL_KEYS = ("accuracy", "nll", "ece", "brier")
OOD_METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")
#: The training recipe of the default ensemble (besides members, epochs, images, seed).
_RECIPE = {"arch": DEFAULT_ARCH, "batch_size": 128, "lr": 3e-3, "schedule": "cosine", "optimizer": "adam"}
MODEL_FILE, MODEL_INFO, INDEX, METRICS = "model.npz", "model.json", "index.html", "metrics.json"


@dataclass
class Config:
    """What the report computes. ``Config()`` is the full report,
    ``Config.quick_config()`` a small, fast one for tests and smoke runs."""

    members: int = 5
    train_images: int = 0          # 0: all 60,000
    epochs: int = 3
    eval_images: int = 0           # MNIST test images used (0: all 10,000)
    ood_images: int = 3000         # images per OOD set, a seeded random subset (0: all)
    n_maps: int = 6                # images per uncertainty-map figure (1.1-1.3)
    n_saliency: int = 9            # images per saliency figure (2.x)
    n_edit: int = 2                # edited images (1.4)
    n_confident: int = 6           # most confidently misclassified OOD images per set (3.x)
    n_methods: int = 3             # images in the attribution-method comparison (4)
    classes: tuple = (4, 8, 5)     # the classes of 2.4, 2.5, 2.6
    seed: int = 0                  # ensemble seed (training) and subset seed
    member: int = 0                # the member that is the single-model baseline
    edit_steps: int = 50
    edit_step_size: float = 0.02
    edit_eps: float = 0.3
    smoothgrad_samples: int = 16
    ig_steps: int = 32
    blur_images: int = 64          # most uncertain test images the blur test (2.7) draws from
    blur_steps: int = 5            # evaluations between 0 and 5% of the pixels in the blur test
    blur_smoothgrad_samples: int = 4   # cheaper than the figures' methods: 2.7 attributes every image
    blur_ig_steps: int = 8
    dpi: int = 100
    quick: bool = False

    @classmethod
    def quick_config(cls, **kw):
        base = dict(members=2, train_images=3000, epochs=1, eval_images=2000, ood_images=300, n_maps=2,
                    n_saliency=3, n_edit=1, n_confident=3, n_methods=2, edit_steps=10, edit_step_size=0.05,
                    smoothgrad_samples=4, ig_steps=8, blur_images=24, blur_steps=4, blur_smoothgrad_samples=2,
                    blur_ig_steps=4, dpi=60, quick=True)
        base.update(kw)
        return cls(**base)

    def recipe(self):
        """What a trained model depends on: the cache key of ``OUT/model.npz``."""
        return dict(_RECIPE, members=self.members, epochs=self.epochs, train_images=self.train_images or 60000,
                    seed=self.seed)


class ReportError(ValueError):
    """A report cannot be made as asked (bad model file, section, option)."""


# ------------------------------------------------------------------------------------ the page

class _Page:
    """The HTML page being built: headings, text, tables and figures."""

    def __init__(self, folder, dpi):
        self.folder, self.dpi = folder, dpi
        self.parts, self.figures, self.toc = [], [], []
        self._part = None

    def heading(self, number, title):
        part = number.split(".")[0]
        if part != self._part:
            self._part = part
            self.parts.append(f'<h1 class="part">{html.escape(PARTS[part])}</h1>')
        anchor = "s" + number.replace(".", "-")
        self.toc.append((anchor, number, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(number)} {html.escape(title)}</h2>')

    def text(self, s):
        self.parts.append(f"<p>{html.escape(s)}</p>")

    def table(self, header, rows, caption=None, bold=()):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
        body = "".join("<tr>" + "".join(
            f"<td{' class=best' if (i, j) in bold else ''}>{_cell(c)}</td>" for j, c in enumerate(r)) + "</tr>"
            for i, r in enumerate(rows))
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig, name, caption, wide=False):
        """Saves ``fig`` as ``name`` (PNG) and adds it with its caption."""
        import matplotlib.pyplot as plt
        try:
            fig.savefig(os.path.join(self.folder, name), dpi=self.dpi, bbox_inches="tight", facecolor="white")
        finally:
            plt.close(fig)
        self.figures.append(name)
        cls = ' class="wide"' if wide else ""
        self.parts.append(f'<figure{cls}><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def open_grid(self):
        self.parts.append('<div class="grid">')

    def close_grid(self):
        self.parts.append("</div>")

    def html(self, title, summary_html):
        style = ("body{font-family:Helvetica,Arial,sans-serif;max-width:1500px;margin:auto;padding:1em 2em;"
                 "color:#222}h1{font-size:1.7em}h1.part{margin-top:2em;border-bottom:3px solid #8a1c1c;"
                 "color:#8a1c1c}h2{margin-top:1.6em;border-bottom:1px solid #ccc}"
                 "img{max-width:100%;height:auto}figure{margin:1em 0}"
                 "figcaption{color:#444;font-size:.95em;max-width:1100px}"
                 ".grid{display:grid;grid-template-columns:1fr 1fr;gap:1em;align-items:start}"
                 ".grid figure{margin:0}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:.95em}caption{text-align:left;"
                 "font-weight:bold;padding:.3em 0}td,th{border:1px solid #ccc;padding:3px 10px;text-align:right}"
                 "td:first-child,th:first-child{text-align:left}th{background:#eee}td.best{font-weight:bold}"
                 "nav ol{columns:2;font-size:.95em}.summary{background:#f6f6f6;padding:.5em 1em;"
                 "border-left:4px solid #8a1c1c}")
        toc = "".join(f'<li><a href="#{a}">{html.escape(n)} {html.escape(t)}</a></li>' for a, n, t in self.toc)
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(title)}</title><style>{style}</style></head><body>"
                f"<h1>{html.escape(title)}</h1><div class='summary'>{summary_html}</div>"
                f"<nav><h3>Contents</h3><ol>{toc}</ol></nav>\n" + "\n".join(self.parts) + "\n</body></html>\n")


def _cell(v):
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return html.escape(str(v))


# ---------------------------------------------------------------------------------- files, model

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _chmod(path, mode):
    """``mode`` less the umask (mkstemp / mkdtemp create private 0600 / 0700 entries)."""
    try:
        os.chmod(path, mode & ~_umask())
    except OSError:
        pass


def _write_text(path, text):
    """Writes ``text`` to ``path`` atomically (temporary file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _chmod(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_model(path):
    """Loads a saved ensemble for the report, or raises :class:`ReportError`
    (a ``ValueError``) saying why it cannot be used."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ReportError(f"--model: no such file: {path!r}")
    if os.path.isdir(path):
        raise ReportError(f"--model: {path!r} is a folder, not a model file (.npz)")
    try:
        model = Ensemble.load(path)
    except (ValueError, OSError) as e:
        raise ReportError(f"--model: cannot use {path!r}: {e}") from e
    if tuple(model.in_shape) != (1, 28, 28) or model.n_classes != 10:
        raise ReportError(f"--model: {path!r} takes {model.in_shape} images into {model.n_classes} classes; the "
                          "report needs an MNIST model: (1, 28, 28) images, 10 classes")
    return model


def _cached_model(out, recipe):
    """The ensemble cached in ``out`` if it was trained with ``recipe`` and is intact, else None
    (with the reason)."""
    npz, info = os.path.join(out, MODEL_FILE), os.path.join(out, MODEL_INFO)
    if not os.path.exists(npz):
        return None, "no cached model"
    try:
        with open(info, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None, f"{MODEL_INFO} is missing or unreadable, so {MODEL_FILE} cannot be matched to a recipe"
    if meta.get("recipe") != recipe:
        return None, f"the cached model was made with {meta.get('recipe') or meta.get('source')}, not {recipe}"
    if meta.get("sha256") != _sha256(npz):
        return None, f"{MODEL_FILE} changed since it was cached (sha256 mismatch)"
    try:
        model = Ensemble.load(npz)
    except (ValueError, OSError) as e:
        return None, f"the cached model is unreadable ({e})"
    if model.arch != recipe["arch"] or model.members != recipe["members"]:
        return None, "the cached model does not match its recipe"
    return model, "reused"


def _save_model(model, folder, meta):
    npz = os.path.join(folder, MODEL_FILE)
    model.save(npz)
    _chmod(npz, 0o666)
    meta = dict(meta, sha256=_sha256(npz), arch=model.arch, members=model.members, seed=model.seed)
    _write_text(os.path.join(folder, MODEL_INFO), json.dumps(meta, indent=2) + "\n")


def _publish(stage, out, files):
    """Moves the finished report from ``stage`` to ``out``.

    A new ``out`` is ``stage`` renamed (one atomic step). Into an existing folder
    each file is moved with ``os.replace`` (atomic per file), figures and model
    first, then ``metrics.json``, then ``index.html``; figures of an earlier
    report that this one does not have are removed."""
    if not os.path.exists(out):
        try:
            os.rename(stage, out)
            return
        except OSError:
            os.makedirs(out, exist_ok=True)   # raced with someone creating it: fall through
    if not os.path.isdir(out):
        raise ReportError(f"--out {out!r} exists and is not a folder")
    old = set()
    try:
        with open(os.path.join(out, METRICS), encoding="utf-8") as f:
            old = set(json.load(f).get("files", []))
    except (OSError, ValueError, AttributeError):
        pass
    last = [METRICS, INDEX]
    for name in [f for f in files if f not in last] + last:
        os.replace(os.path.join(stage, name), os.path.join(out, name))
    for name in old - set(files):
        if name.endswith(".png") and os.path.basename(name) == name:
            try:
                os.unlink(os.path.join(out, name))
            except OSError:
                pass
    shutil.rmtree(stage, ignore_errors=True)


# ------------------------------------------------------------------------------------- helpers

def _subset(x, y, n, seed):
    """A seeded random subset of ``n`` images (in index order) and their indices; all if n is 0."""
    if not n or n >= len(x):
        return x, y, np.arange(len(x))
    idx = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[idx], y[idx], idx


def _take(u, idx):
    from .uncertainty import Uncertainty
    return Uncertainty(u.member_probs[:, idx], u.mean_probs[idx], u.pred[idx], u.max_prob[idx], u.total[idx],
                       u.aleatoric[idx], u.epistemic[idx], u.unit)


def _letter_examples(labels, letters, n):
    """Indices of the first image of each wanted letter present (EMNIST labels are 1-based),
    filled up with the next images of other letters, ``n`` in all."""
    idx = []
    for ch in letters.replace(" ", ""):
        hits = np.flatnonzero(labels == EMNIST_LETTERS.index(ch) + 1)
        if len(hits) and int(hits[0]) not in idx:
            idx.append(int(hits[0]))
    for i in range(len(labels)):
        if len(idx) >= n:
            break
        if i not in idx:
            idx.append(i)
    return np.array(idx[:n], dtype=np.int64)


def _cal_dict(c):
    return {k: float(getattr(c, k)) for k in CAL_KEYS}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _check_sections(sections):
    if sections is None:
        return list(SECTIONS)
    if isinstance(sections, str):
        sections = sections.split(",")
    wanted = [str(s).strip() for s in sections if str(s).strip()]
    if not wanted:
        raise ReportError(f"--sections names no section; choose from {', '.join(SECTIONS)}")
    expanded = []
    for s in wanted:   # "1" or "3" selects the whole part
        expanded += [t for t in SECTIONS if t.split(".")[0] == s] if s in PARTS and s != "4" else [s]
    unknown = [s for s in expanded if s not in SECTIONS]
    if unknown:
        raise ReportError(f"unknown report section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)} "
                          "(or a whole part: 1, 2, 3)")
    return [s for s in SECTIONS if s in expanded]   # page order, no duplicates


def _check_classes(classes):
    try:
        classes = tuple(int(c) for c in classes)
    except (TypeError, ValueError) as e:
        raise ReportError(f"--classes must be three digits 0-9, e.g. 4,8,5; got {classes!r}") from e
    if len(classes) != 3 or not all(0 <= c <= 9 for c in classes):
        raise ReportError(f"--classes must be three digits 0-9 (sections 2.4, 2.5, 2.6), got {classes}")
    return classes


def _progress(iterable, desc, enabled, **kw):
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, disable=not enabled, dynamic_ncols=True, **kw)


# --------------------------------------------------------------------------------------- build

def build(out, model_path=None, quick=False, sections=None, classes=None, progress=True, config=None):
    """Builds the report into the folder ``out``; returns the metrics dict (as in ``metrics.json``).

    Parameters
    ----------
    out : path-like
        The report folder (created; an existing one is updated in place, file by file).
    model_path : path-like, optional
        A saved ensemble (:meth:`Ensemble.save`) to use. Without it the default
        ensemble is trained (5 members, 3 epochs on all of MNIST train; with
        ``quick``, 2 members, 1 epoch on 3,000 images) and cached as
        ``out/model.npz``, reused by the next report into ``out``.
    quick : bool
        The small, fast variant (:meth:`Config.quick_config`).
    sections : sequence of str or comma-separated str, optional
        Sections to build (default all, see :data:`SECTIONS`; ``"1"``, ``"2"``,
        ``"3"`` select a whole part). They always appear in page order.
    classes : three ints, optional
        The classes of sections 2.4, 2.5, 2.6 (default 4, 8, 5).
    progress : bool
        Progress bars (on stderr) over training, prediction and the sections.
    config : Config, optional
        Overrides ``quick``.

    Raises
    ------
    ReportError (a ValueError)
        A missing, unreadable or non-MNIST ``model_path``, an unknown section or bad classes.
    FileNotFoundError
        Missing data (``UQATTR_DATA``).
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
    load_start = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    cfg = config or (Config.quick_config() if quick else Config())
    if classes is not None:
        cfg.classes = _check_classes(classes)
    wanted = _check_sections(sections)
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ReportError(f"--out {out!r} exists and is not a folder")
    timings = {}

    # the model first: a bad --model fails before anything is written
    t0 = time.perf_counter()
    trained = False
    if model_path is not None:
        model = load_model(model_path)
        source = {"source": os.path.abspath(os.fspath(model_path)), "recipe": None}
        how = f"loaded from {model_path}"
    else:
        model, why = _cached_model(out, cfg.recipe())
        source = {"source": "trained by uqattr report", "recipe": cfg.recipe()}
        how = f"reused from {os.path.join(out, MODEL_FILE)}"
        if model is None:
            if progress:
                print(f"uqattr report: training the {'quick' if cfg.quick else 'default'} ensemble "
                      f"({cfg.members} members, {cfg.epochs} epoch(s) on {cfg.train_images or 60000:,} MNIST "
                      f"images; {why})", file=sys.stderr, flush=True)
            x_train, y_train = datasets.load("mnist", "train")
            if cfg.train_images:
                x_train, y_train = x_train[:cfg.train_images], y_train[:cfg.train_images]
            model = Ensemble(DEFAULT_ARCH, members=cfg.members, seed=cfg.seed)
            t1 = time.perf_counter()
            model.fit(x_train, y_train, epochs=cfg.epochs, batch_size=_RECIPE["batch_size"], lr=_RECIPE["lr"],
                      schedule=_RECIPE["schedule"], progress=progress)
            timings["train_seconds"] = time.perf_counter() - t1
            trained = True
            how = f"trained now ({timings['train_seconds']:.0f} s)"
    timings.setdefault("train_seconds", 0.0)
    timings["model_seconds"] = time.perf_counter() - t0
    if not 0 <= cfg.member < model.members:
        raise ReportError(f"single-model member {cfg.member} out of range for an ensemble of {model.members}")

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    _chmod(stage, 0o777)
    try:
        _save_model(model, stage, source)
        report = _build(stage, model, cfg, wanted, progress, timings, how)
        timings["total_seconds"] = time.perf_counter() - t_start
        timings["cpu_seconds"] = time.process_time() - cpu_start
        report["machine"] = {"threads": _threads(), "cpus": os.cpu_count(), "load_average_at_start": load_start}
        files = [MODEL_FILE, MODEL_INFO] + report["figures"] + [METRICS, INDEX]
        report["files"] = files
        summary = _summary_html(report, model)
        page_html = report.pop("_page").html("uqattr report: uncertainty attribution for a deep ensemble",
                                              summary)
        _write_text(os.path.join(stage, METRICS),
                    json.dumps(report, indent=2, default=_json_default, allow_nan=False) + "\n")
        _write_text(os.path.join(stage, INDEX), page_html)
        _publish(stage, out, files)
    except BaseException:
        if trained and os.path.exists(os.path.join(stage, MODEL_INFO)):
            # keep the freshly trained model, so the next attempt need not train again
            try:
                os.makedirs(out, exist_ok=True)
                for name in (MODEL_FILE, MODEL_INFO):
                    os.replace(os.path.join(stage, name), os.path.join(out, name))
                print(f"uqattr report: failed; the trained model was kept in {out}/{MODEL_FILE} and will be "
                      "reused", file=sys.stderr)
            except OSError:
                pass
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _build(folder, model, cfg, wanted, progress, timings, how):
    """Computes every wanted section into ``folder``; returns the metrics dict
    (with the page under ``"_page"``)."""
    from . import __version__, attr, edit, ood, plots
    from .metrics import calibration
    from .uncertainty import decompose, uncertainty

    page = _Page(folder, cfg.dpi)
    m = cfg.member

    # data: MNIST test and the OOD sets the wanted sections need
    t0 = time.perf_counter()
    x_test, y_test = datasets.load("mnist", "test")
    x_eval, y_eval, eval_idx = _subset(x_test, y_test, cfg.eval_images, cfg.seed)
    need = [s for s in OOD_SETS if s in wanted]
    if {"1.1", "2.1"} & set(wanted) and "3.1" not in need:
        need.insert(0, "3.1")
    ood_data = {}
    for sec in need:
        name, split, label = OOD_SETS[sec]
        x_o, y_o = datasets.load(name, split)
        ood_data[sec] = _subset(x_o, y_o, cfg.ood_images, cfg.seed + 1)
    timings["data_seconds"] = time.perf_counter() - t0

    # one prediction pass per set: every number below comes from these
    t0 = time.perf_counter()
    u = decompose(model.predict_proba(x_eval))
    ood_probs = {}
    for sec in _progress(need, "predicting OOD sets", progress and bool(need), unit="set"):
        ood_probs[sec] = model.predict_proba(ood_data[sec][0])
    timings["predict_seconds"] = time.perf_counter() - t0

    cal = {"single": calibration(u.member_probs[m], y_eval), "ensemble": calibration(u.mean_probs, y_eval)}
    scores_in = ood.scores_from_probs(u.member_probs, member=m)
    results = {}
    for sec in need:
        name, split, label = OOD_SETS[sec]
        s_out = ood.scores_from_probs(ood_probs[sec], member=m)
        results[sec] = ood.OODResult(name=label, metrics={s: ood.metrics(scores_in[s], s_out[s]) for s in ood.SCORES},
                                     scores_in=scores_in, scores_out=s_out, member=m, members=model.members)

    report = {
        "uqattr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"arch": model.arch, "members": model.members, "seed": model.seed, "n_params": model.n_params,
                  "how": how, "single_model_member": m},
        "config": asdict(cfg),
        "sections": wanted,
        "mnist": {"n_test": int(len(x_eval)),
                  "member_accuracy": [float((p.argmax(1) == y_eval).mean()) for p in u.member_probs],
                  "single": _cal_dict(cal["single"]), "ensemble": _cal_dict(cal["ensemble"]),
                  "mean_uncertainty": {k: float(getattr(u, k).mean()) for k in MAP_ORDER}},
        "ood": {},
        "timings": timings,
    }
    for sec, res in results.items():
        if sec in wanted:
            report["ood"][res.name] = {"dataset": OOD_SETS[sec][0], "split": OOD_SETS[sec][1], "n_in": res.n_in,
                                       "n_out": res.n_out,
                                       "metrics": {s: {k: float(v) for k, v in r.items()} for s, r in
                                                   res.metrics.items()}}

    saliency = attr.Saliency(model)

    def maps_for(x):
        return saliency.attribute(x, target=list(MAP_ORDER))

    def titles(us, labels=None, names=None):
        return [plots.describe(us.pred[j], us.max_prob[j], None if labels is None else int(labels[j]),
                               None if names is None else names[j]) for j in range(len(us))]

    def test_names(idx):
        return [f"image_{int(eval_idx[i])} label {int(y_eval[i])}" for i in idx]

    def letters(idx, y):
        return [EMNIST_LETTERS[int(y[i]) - 1].upper() for i in idx]

    def fname(sec, what):
        return f"fig_{sec.replace('.', '_')}_{what}.png"

    most = u.most_uncertain(max(cfg.n_maps, cfg.n_saliency))
    least = u.least_uncertain(max(cfg.n_maps, cfg.n_saliency, cfg.n_edit))
    # The sections differentiate a few images at a time (along_gradient: 50 calls on 2 images).
    # Such small calls gain nothing from more threads, and on a busy machine every OpenMP
    # barrier waits for a descheduled thread (measured under load: 0.8 s instead of 0.014 s per
    # call with 2 threads on 2 cores), so they run on one; the big prediction passes above use all.
    threads = _threads()
    with _threads_set(1):
        for sec in _progress(wanted, "report sections", progress, unit="section"):
            t0 = time.perf_counter()
            number_title = TITLES[sec]
            if sec in ("2.4", "2.5", "2.6"):
                number_title += f" \u201c{cfg.classes[int(sec[-1]) - 4]}\u201d"
            page.heading(sec, number_title)

            if sec == "1.1":
                x_l, y_l, _ = ood_data["3.1"]
                idx = _letter_examples(y_l, "gdaecb", cfg.n_maps)
                xs = x_l[idx]
                u_sel = decompose(ood_probs["3.1"][:, idx])
                page.figure(plots.plot_uncertainty_maps(xs, maps_for(xs), titles(u_sel, names=letters(idx, y_l))),
                            fname(sec, "ood_uncertainty_maps"),
                            "EMNIST letters, which the MNIST ensemble never saw, with the gradient of "
                            "each uncertainty "
                            "with respect to the pixels (red pixels raise it, blue lower it). Mean over these "
                            f"{len(idx)} letters: total {u_sel.total.mean():.3f}, epistemic "
                            f"{u_sel.epistemic.mean():.3f}, "
                            f"aleatoric {u_sel.aleatoric.mean():.3f} nats; on MNIST test: total {u.total.mean():.3f}, "
                            f"epistemic {u.epistemic.mean():.4f}, aleatoric {u.aleatoric.mean():.3f} nats.")

            elif sec in ("1.2", "1.3"):
                idx = (most if sec == "1.2" else least)[:cfg.n_maps]
                which = "most" if sec == "1.2" else "least"
                u_sel, xs = _take(u, idx), x_eval[idx]
                correct = int((u_sel.pred == y_eval[idx]).sum())
                page.figure(plots.plot_uncertainty_maps(xs, maps_for(xs), titles(u_sel, labels=y_eval[idx])),
                            fname(sec, f"{which}_uncertain"),
                            f"The {len(idx)} {which} uncertain of {len(x_eval):,} MNIST test images by "
                            "total uncertainty "
                            f"({u_sel.total.min():.3g} to {u_sel.total.max():.3g} nats; max probability "
                            f"{u_sel.max_prob.min():.2f} to {u_sel.max_prob.max():.2f}; {correct} of {len(idx)} "
                            "predicted correctly), each with its total, epistemic and aleatoric uncertainty map "
                            "(vanilla gradients, signed: red raises the uncertainty).")

            elif sec == "1.4":
                idx = least[:cfg.n_edit]
                xs = np.ascontiguousarray(x_eval[idx])
                edited = edit.along_gradient(model, xs, target="total", direction=+1, steps=cfg.edit_steps,
                                             step_size=cfg.edit_step_size, eps=cfg.edit_eps, norm="linf")
                rep = edit.edit_report(model, xs, edited, labels=y_eval[idx])
                m0, m1 = maps_for(xs), maps_for(edited)
                page.text(f"The {len(idx)} least uncertain test images, moved by {cfg.edit_steps} "
                          "signed-gradient steps "
                          f"of {cfg.edit_step_size} along the gradient of their total uncertainty "
                          f"(uqattr.edit.along_gradient, each pixel within \u00b1{cfg.edit_eps} of the original and "
                          f"in [0, 1]). Mean total uncertainty {rep['total_before'].mean():.2e} \u2192 "
                          f"{rep['total_after'].mean():.3f} nats; {int(rep['changed'].sum())} of {len(idx)} "
                          "predictions changed.")
                page.open_grid()
                for j in range(len(idx)):
                    t_orig = (f"Original Image (Label: {int(y_eval[idx[j]])})\n"
                              f"Prediction: {int(rep['pred_before'][j])} (Prob: {rep['prob_before'][j]:.2f})")
                    t_edit = (f"Edited Image\n"
                              f"Prediction: {int(rep['pred_after'][j])} (Prob: {rep['prob_after'][j]:.2f})")
                    fig = plots.plot_edit(xs[j], edited[j], {k: v[j] for k, v in m0.items()},
                                          {k: v[j] for k, v in m1.items()}, t_orig, t_edit, order=MAP_ORDER)
                    page.figure(fig, fname(sec, f"edit_{j}"),
                                f"{test_names([idx[j]])[0]}: total uncertainty {rep['total_before'][j]:.2e} \u2192 "
                                f"{rep['total_after'][j]:.3f} nats, epistemic {rep['epistemic_before'][j]:.2e} \u2192 "
                                f"{rep['epistemic_after'][j]:.3f}, prediction {int(rep['pred_before'][j])} "
                                f"({rep['prob_before'][j]:.2f}) \u2192 {int(rep['pred_after'][j])} "
                                f"({rep['prob_after'][j]:.2f}); largest pixel change {rep['linf'][j]:.2f}. Each map "
                                "column shares one colour scale, top and bottom.")
                page.close_grid()
                report["editing"] = {
                    "n": int(len(idx)), "test_indices": [int(eval_idx[i]) for i in idx], "target": "total",
                    "norm": "linf", "eps": cfg.edit_eps, "steps": cfg.edit_steps, "step_size": cfg.edit_step_size,
                    "total_before": float(rep["total_before"].mean()), "total_after": float(rep["total_after"].mean()),
                    "epistemic_before": float(rep["epistemic_before"].mean()),
                    "epistemic_after": float(rep["epistemic_after"].mean()),
                    "prob_before": float(rep["prob_before"].mean()), "prob_after": float(rep["prob_after"].mean()),
                    "changed": int(rep["changed"].sum()), "max_linf": float(rep["linf"].max())}

            elif sec in ("2.1", "2.2", "2.3", "2.4", "2.5", "2.6"):
                if sec == "2.1":
                    x_l, y_l, _ = ood_data["3.1"]
                    idx = _letter_examples(y_l, "geidfahcb", cfg.n_saliency)
                    xs, u_sel = x_l[idx], decompose(ood_probs["3.1"][:, idx])
                    tt = titles(u_sel, names=letters(idx, y_l))
                    what = f"{len(idx)} EMNIST letters"
                elif sec in ("2.2", "2.3"):
                    idx = (most if sec == "2.2" else least)[:cfg.n_saliency]
                    xs, u_sel = x_eval[idx], _take(u, idx)
                    tt = titles(u_sel, names=test_names(idx))
                    what = f"the {len(idx)} {'most' if sec == '2.2' else 'least'} uncertain MNIST test images"
                else:
                    cls = cfg.classes[int(sec[-1]) - 4]
                    members_of = np.flatnonzero(y_eval == cls)
                    order = np.argsort(u.total[members_of], kind="stable")
                    idx = members_of[order[:cfg.n_saliency]]
                    xs, u_sel = x_eval[idx], _take(u, idx)
                    tt = titles(u_sel, names=test_names(idx))
                    what = f"the {len(idx)} least uncertain MNIST test images labelled {cls}"
                sal = saliency.attribute(xs, target="max_prob")
                page.figure(plots.plot_saliency(xs, sal, tt), fname(sec, "saliency"),
                            f"Ensemble saliency maps of {what}: the gradient of the ensemble's mean probability of its "
                            "predicted class with respect to each pixel (red raises the probability, blue lowers it). "
                            f"Max probability {u_sel.max_prob.min():.2f} to {u_sel.max_prob.max():.2f}, total "
                            f"uncertainty {u_sel.total.min():.2g} to {u_sel.total.max():.2g} nats.")

            elif sec == "2.7":
                with _threads_set(threads):  # big batches: all threads pay here
                    report["blur_test"] = _blur_section(page, model, x_eval, u, cfg, fname(sec, "blur_test"))

            elif sec in OOD_SETS:
                res = results[sec]
                label = res.name
                x_o = ood_data[sec][0]
                mt = res.metrics
                page.figure(res.plot_histograms(), fname(sec, "ood_histograms"),
                            f"MNIST test ({res.n_in:,} images) vs {label} ({res.n_out:,} images): AUROC of the single "
                            f"model's max softmax probability {mt['msp_single']['auroc']:.3f}, the ensemble's "
                            f"{mt['msp_ensemble']['auroc']:.3f}, epistemic uncertainty {mt['epistemic']['auroc']:.3f} "
                            f"(total {mt['total']['auroc']:.3f}, aleatoric {mt['aleatoric']['auroc']:.3f}). FPR@95: "
                            f"single MSP {mt['msp_single']['fpr95']:.3f}, ensemble MSP "
                            f"{mt['msp_ensemble']['fpr95']:.3f}, "
                            f"epistemic {mt['epistemic']['fpr95']:.3f}.", wide=True)
                p = np.asarray(ood_probs[sec], dtype=np.float64)
                order = np.argsort(res.scores_out["msp_single"], kind="stable")[:cfg.n_confident]
                single, mean = p[m][order], p.mean(axis=0)[order]
                sal = saliency.attribute(x_o[order], target="max_prob")
                ds_idx = ood_data[sec][2]
                tt = [f"{label} #{int(ds_idx[i])}\nSingle model: {int(a.argmax())} (Prob: {a.max():.2f})\n"
                      f"Ensemble: {int(b.argmax())} (Prob: {b.max():.2f})" for i, a, b in zip(order, single, mean)]
                page.figure(plots.plot_saliency(x_o[order], sal, tt), fname(sec, "most_confident"),
                            f"The {len(order)} {label} images the single model (member {m}) is most confident about: "
                            f"it gives them probability {single.max(axis=1).min():.3f} to "
                            f"{single.max(axis=1).max():.3f}; "
                            f"the ensemble {mean.max(axis=1).min():.2f} to {mean.max(axis=1).max():.2f}. Beside each, "
                            "the ensemble saliency map.")
                n_sure = int((p[m].max(axis=1) > 0.99).sum())
                report["ood"][label]["single_over_99"] = n_sure
                report["ood"][label]["ensemble_over_99"] = int((p.mean(axis=0).max(axis=1) > 0.99).sum())
                report["ood"][label]["most_confident"] = {
                    "indices": [int(ds_idx[i]) for i in order], "single_pred": single.argmax(1).tolist(),
                    "single_prob": single.max(1).tolist(), "ensemble_pred": mean.argmax(1).tolist(),
                    "ensemble_prob": mean.max(1).tolist()}
                rows = [[s] + [mt[s][k] for k in OOD_METRIC_KEYS] for s in ood.SCORES]
                bold = {(_best(rows, j + 1, ood.HIGHER_IS_BETTER[k]), j + 1) for j, k in enumerate(OOD_METRIC_KEYS)}
                page.table(["score (higher = more OOD)"] + [ood.METRIC_HEADERS[k] for k in OOD_METRIC_KEYS], rows,
                           caption=f"MNIST vs {label}: OOD detection by each score (OOD = positive "
                                   "class; best in bold). "
                                   f"Single model over 99% sure on {n_sure:,} of {res.n_out:,} {label} images, the "
                                   f"ensemble on {report['ood'][label]['ensemble_over_99']:,}.", bold=bold)

            elif sec == "4":
                page.table(["model", "accuracy", "NLL", "ECE", "Brier"],
                           [[f"single model (member {m})"] + [cal["single"].__dict__[k] for k in CAL_KEYS],
                            [f"ensemble of {model.members}"] + [cal["ensemble"].__dict__[k] for k in CAL_KEYS]],
                           caption=f"Calibration on {len(x_eval):,} MNIST test images (ECE: 15 equal-width bins; "
                                   "Brier: sum over classes).")
                page.figure(ood.plot_calibration(cal), fname(sec, "reliability"),
                            f"Reliability diagrams: ECE single model {cal['single'].ece:.4f}, ensemble "
                            f"{cal['ensemble'].ece:.4f}.")
                if results:
                    names = [r.name for r in results.values()]
                    page.table(["OOD set"] + list(ood.SCORES),
                               [[r.name] + [r.metrics[s]["auroc"] for s in ood.SCORES] for r in results.values()],
                               caption="AUROC per OOD set and score, MNIST test as in-distribution: "
                                       + ", ".join(names) + ".")
                idx = most[:cfg.n_methods]
                xs = x_eval[idx]
                methods = {"Vanilla gradient": attr.Saliency(model),
                           "SmoothGrad": attr.SmoothGrad(model, n_samples=cfg.smoothgrad_samples),
                           "Integrated Gradients": attr.IntegratedGradients(model, steps=cfg.ig_steps),
                           "Input \u00d7 gradient": attr.InputXGradient(model)}
                maps = {k: meth.attribute(xs, target="total") for k, meth in methods.items()}
                page.figure(plots.plot_uncertainty_maps(xs, maps, titles(_take(u, idx), labels=y_eval[idx]),
                                                        order=tuple(methods)),
                            fname(sec, "methods"),
                            f"Total uncertainty of the {len(idx)} most uncertain test images attributed "
                            "by four methods "
                            "(signed; red raises the uncertainty): vanilla gradient, SmoothGrad "
                            f"({cfg.smoothgrad_samples} samples, \u03c3 = 0.15), Integrated Gradients ({cfg.ig_steps} "
                            "steps from a black image) and input \u00d7 gradient.")
            timings[f"section_{sec}_seconds"] = time.perf_counter() - t0

    report["figures"] = list(page.figures)
    report["_page"] = page
    return report


def _blur_section(page, model, x_eval, u, cfg, figure_name):
    """Section 2.7: the blur test of every attribution method, for each target; returns its metrics."""
    from . import evaluate

    idx = u.most_uncertain(min(cfg.blur_images, len(x_eval)))
    targets = list(UNCERTAINTY_TARGETS) + ["max_prob"]
    methods = evaluate.default_methods(model, smoothgrad_samples=cfg.blur_smoothgrad_samples,
                                       ig_steps=cfg.blur_ig_steps, seed=cfg.seed)
    cmp = evaluate.compare_attributions(model, x_eval[idx], targets=targets, methods=methods, steps=cfg.blur_steps,
                                        seed=cfg.seed, progress=False)
    summaries = {m: {t: r.summary() for t, r in by_t.items()} for m, by_t in cmp.results.items()}
    n_tested = {t: len(cmp.results["random"][t].indices) for t in targets}
    urc5 = cmp.table("urc@5%")
    best = {t: cmp.best(t) for t in targets}
    below_random = [t for t in UNCERTAINTY_TARGETS if urc5["|gradient|"][t] < urc5["random"][t]]
    pa = "gradient × (x − blur)"
    page.text(
        f"Which pixels does each attribution method say make the ensemble uncertain, and are they the ones "
        f"that do? Of the {len(idx)} most uncertain test images, those whose target is above the median "
        f"({', '.join(f'{n_tested[t]} for {t}' for t in targets[:3])}; all {n_tested['max_prob']} for the "
        "probability of the predicted class) have their pixels replaced, most important first, by a blurred "
        f"copy (σ = 1.5 px), up to 5% of the pixels (Perez et al., UAI 2022; SmoothGrad with "
        f"{cfg.blur_smoothgrad_samples} samples, Integrated Gradients with {cfg.blur_ig_steps} steps here; "
        "benchmarks/blur_table.py runs the full-size test). URC@k: the median over "
        "images of the largest relative reduction of the target after k of the pixels; 1 − AUC: one "
        "minus the area under the mean H_k / H_0 curve (higher is better for both; negative when removal "
        "raises the target).")
    header = ["method"] + [f"{t} {k}" for t in targets for k in ("URC@1%", "URC@5%", "1−AUC")]
    rows = [[m] + [summaries[m][t][k] for t in targets for k in ("urc@1%", "urc@5%", "1-auc")] for m in summaries]
    bold = {(_best(rows, j, True), j) for j in range(1, len(header))}
    page.table(header, rows, caption="Blur test per method and target (best in bold). Targets: the three "
                                     "uncertainties, and max_prob (a deletion curve of the predicted class's "
                                     "probability).", bold=bold)
    verdict = (f"Ranked by the magnitude of the vanilla gradient, removing pixels lowers "
               f"{' and '.join(below_random)} uncertainty less than a random ranking does: |gradient| shows where "
               "the uncertainty is sensitive, not what causes it. " if below_random else
               "Ranked by the magnitude of the vanilla gradient, removal beats a random ranking for every "
               "uncertainty here, but reaches only "
               + ", ".join(f"{urc5['|gradient|'][t] / urc5[pa][t]:.0%}" if urc5[pa][t] > 0 else "n/a"
                           for t in UNCERTAINTY_TARGETS)
               + " (total, aleatoric, epistemic) of the perturbation-aware ranking's URC@5%. ")
    auc = cmp.table("1-auc")
    raised = [t for t in UNCERTAINTY_TARGETS if auc["|gradient|"][t] < auc["random"][t]]
    if raised:
        verdict += (f"By 1 \u2212 AUC it is worse than random for {', '.join(raised)}: blurring the pixels it "
                    "ranks first raises the uncertainty on average. ")
    page.figure(cmp.plot(), figure_name,
                verdict + f"The signed perturbation-aware ranking ({pa}, the first-order drop when a pixel is "
                f"blurred) reaches URC@5% {urc5[pa]['total']:.3f} (total), {urc5[pa]['aleatoric']:.3f} (aleatoric), "
                f"{urc5[pa]['epistemic']:.3f} (epistemic) against random's {urc5['random']['total']:.3f}, "
                f"{urc5['random']['aleatoric']:.3f}, {urc5['random']['epistemic']:.3f}. Best by URC@5%: "
                + ", ".join(f"{t}: {best[t]}" for t in targets) + ". For a reader of vanilla saliency maps: "
                "a bright pixel in |gradient| is not a pixel that makes the model uncertain; read the signed "
                "map, or one weighted by how far the pixel would move.", wide=True)
    return {"n_images": int(len(idx)), "n_tested": n_tested, "sigma": 1.5, "max_fraction": 0.05,
            "steps": cfg.blur_steps, "methods": summaries, "best_by_urc5": best}


class _threads_set:
    """Runs the C core on ``n`` threads inside the block, then restores the thread count."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        from . import get_num_threads, set_num_threads
        self.threads = get_num_threads()
        set_num_threads(self.n)

    def __exit__(self, *exc):
        from . import set_num_threads
        set_num_threads(self.threads)
        return False


def _threads():
    from . import get_num_threads
    return int(get_num_threads())


def _best(rows, col, higher):
    vals = [r[col] for r in rows]
    return int(np.argmax(vals) if higher else np.argmin(vals))


def _summary_html(report, model):
    mn = report["mnist"]
    e, s = mn["ensemble"], mn["single"]
    t = report["timings"]
    lines = [f"Deep ensemble of {model.members} \u00d7 <code>{html.escape(model.arch)}</code> "
             f"({html.escape(report['model']['how'])}); single model = member "
             f"{report['model']['single_model_member']}.",
             f"MNIST test ({mn['n_test']:,} images): ensemble accuracy <b>{e['accuracy']:.4f}</b>, NLL "
             f"{e['nll']:.4f}, ECE {e['ece']:.4f}, Brier {e['brier']:.4f}; single model accuracy "
             f"{s['accuracy']:.4f}, NLL {s['nll']:.4f}, ECE {s['ece']:.4f}, Brier {s['brier']:.4f}; members "
             + ", ".join(f"{a:.4f}" for a in mn["member_accuracy"]) + "."]
    if report["ood"]:
        lines.append("OOD AUROC (single-model MSP / ensemble MSP / epistemic): " + "; ".join(
            f"{html.escape(k)} {v['metrics']['msp_single']['auroc']:.3f} / {v['metrics']['msp_ensemble']['auroc']:.3f}"
            f" / {v['metrics']['epistemic']['auroc']:.3f}" for k, v in report["ood"].items()) + ".")
    lines.append(f"Built in {t['total_seconds']:.0f} s (training {t['train_seconds']:.0f} s; "
                 f"{report['machine']['threads']} threads) by uqattr "
                 f"{html.escape(report['uqattr_version'])} on {html.escape(report['created'])}. Numbers: "
                 f"<a href='{METRICS}'>{METRICS}</a>; model: <a href='{MODEL_FILE}'>{MODEL_FILE}</a>.")
    return "<br>".join(lines)
