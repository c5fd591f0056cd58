"""``uqattr report``: the quick report end to end, through the command line.

One quick report (2 members trained on 3,000 images, small subsets) is built
per module in a temporary folder with ``python -m uqattr report --quick`` and
inspected: links, metrics.json keys and ranges, section order; then
``--sections``, the model cache and the errors for a bad ``--model``.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from uqattr.report import SECTIONS

DATA = os.environ.get("UQATTR_DATA")
pytestmark = pytest.mark.skipif(not DATA or not Path(DATA).is_dir(),
                                reason="UQATTR_DATA is unset or not a folder (set it to the shared datasets/ folder)")

OOD_SETS = ("EMNIST", "KMNIST", "Omniglot", "Fashion-MNIST")
SCORES = ("msp_single", "msp_ensemble", "total", "aleatoric", "epistemic")
OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
CAL = ("accuracy", "nll", "ece", "brier")
TOP_KEYS = ("uqattr_version", "created", "model", "config", "sections", "mnist", "ood", "editing", "timings",
            "machine", "figures", "files")
TIMINGS = ("model_seconds", "train_seconds", "data_seconds", "predict_seconds", "total_seconds",
           "cpu_seconds")
EDITING = ("n", "total_before", "total_after", "epistemic_before", "epistemic_after", "prob_before", "prob_after",
           "changed", "max_linf", "eps", "steps", "step_size")


def run_report(*args, timeout=300):
    env = dict(os.environ, UQATTR_DATA=DATA)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "uqattr", "report", "--quiet", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.headings, self._in_h2, self._text = [], [], False, ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.links.append(a.get("src"))
        elif tag == "a" and a.get("href") and not a["href"].startswith("#"):
            self.links.append(a["href"])
        elif tag == "link" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "h2":
            self._in_h2, self._text = True, ""

    def handle_data(self, data):
        if self._in_h2:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "h2" and self._in_h2:
            self._in_h2 = False
            self.headings.append(self._text.strip())


def parse(folder):
    p = _Links()
    p.feed((folder / "index.html").read_text(encoding="utf-8"))
    return p


def numbers(headings):
    return [h.split(" ", 1)[0] for h in headings]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "quick"
    proc, seconds = run_report("--quick", "--out", str(out))
    assert proc.returncode == 0, f"uqattr report --quick failed:\n{proc.stdout}\n{proc.stderr}"
    return out, proc, seconds


def test_quick_report_is_complete(quick_report):
    """Its wall time is printed, not asserted: speed is for benchmarks, not unit tests."""
    out, proc, seconds = quick_report
    print(f"quick report: {seconds:.1f} s wall")
    for name in ("index.html", "metrics.json", "model.npz", "model.json"):
        assert (out / name).is_file(), name
    assert "report written to" in proc.stdout
    # nothing left behind by the staging folder
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".quick.tmp-")]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_every_link_points_at_an_existing_file(quick_report):
    out, _, _ = quick_report
    page = parse(out)
    assert len(page.links) >= 20
    for link in page.links:
        assert link and "://" not in link and not os.path.isabs(link), link
        assert (out / link).is_file(), f"index.html links to {link!r}, which does not exist"
    metrics = json.loads((out / "metrics.json").read_text())
    imgs = [link for link in page.links if link.endswith(".png")]
    assert sorted(imgs) == sorted(metrics["figures"])
    for name in metrics["files"]:
        assert (out / name).is_file(), name
    for png in imgs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sections_appear_in_order(quick_report):
    out, _, _ = quick_report
    got = numbers(parse(out).headings)
    assert got == list(SECTIONS)
    assert got[:15] == ["1.1", "1.2", "1.3", "1.4", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "3.1", "3.2",
                        "3.3", "3.4"]
    text = (out / "index.html").read_text(encoding="utf-8").lower()
    for words in ("total uncertainty", "saliency map", "emnist", "kmnist", "omniglot", "auroc"):
        assert words in text, words


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def test_metrics_json_has_every_key(quick_report):
    out, _, _ = quick_report
    m = json.loads((out / "metrics.json").read_text())
    for k in TOP_KEYS:
        assert k in m, k
    assert m["sections"] == list(SECTIONS)
    assert m["model"]["members"] == 2 and m["config"]["quick"] is True

    mn = m["mnist"]
    assert mn["n_test"] > 0
    assert len(mn["member_accuracy"]) == 2
    for which in ("single", "ensemble"):
        for k in CAL:
            assert _finite(mn[which][k]), (which, k)
        assert 0.5 < mn[which]["accuracy"] <= 1
        assert mn[which]["nll"] >= 0
        assert 0 <= mn[which]["ece"] <= 1
        assert 0 <= mn[which]["brier"] <= 2
    for k in ("total", "epistemic", "aleatoric"):
        assert _finite(mn["mean_uncertainty"][k]) and mn["mean_uncertainty"][k] >= 0

    assert tuple(m["ood"]) == OOD_SETS
    for name in OOD_SETS:
        r = m["ood"][name]
        assert r["n_in"] == mn["n_test"] and r["n_out"] > 0
        assert tuple(r["metrics"]) == SCORES
        for s in SCORES:
            for k in OOD_METRICS:
                v = r["metrics"][s][k]
                assert _finite(v) and 0 <= v <= 1, (name, s, k, v)
        mc = r["most_confident"]
        assert len(mc["indices"]) == len(mc["single_prob"]) > 0
        assert mc["single_prob"] == sorted(mc["single_prob"], reverse=True)

    for k in EDITING:
        assert _finite(m["editing"][k]), k
    assert m["editing"]["total_after"] > m["editing"]["total_before"]
    assert m["editing"]["max_linf"] <= m["editing"]["eps"] + 1e-6

    bt = m["blur_test"]
    assert bt["n_images"] > 0 and set(bt["n_tested"]) == {"total", "aleatoric", "epistemic", "max_prob"}
    assert "random" in bt["methods"] and len(bt["methods"]) >= 8
    for method, by_target in bt["methods"].items():
        assert set(by_target) == set(bt["n_tested"]), method
        for t, summary in by_target.items():
            assert set(summary) == {"urc@1%", "urc@5%", "1-auc"} and all(map(_finite, summary.values()))
            assert 0 <= summary["urc@1%"] <= summary["urc@5%"] <= 1, (method, t, summary)

    t = m["timings"]
    for k in TIMINGS + tuple(f"section_{s}_seconds" for s in SECTIONS):
        assert _finite(t[k]) and t[k] >= 0, k
    assert t["train_seconds"] > 0          # no --model: the quick ensemble was trained
    assert t["total_seconds"] >= t["train_seconds"]


def test_sections_select_and_the_model_cache_is_reused(quick_report, tmp_path):
    src, _, _ = quick_report
    out = tmp_path / "again"
    shutil.copytree(src, out)
    old_figs = set(json.loads((out / "metrics.json").read_text())["figures"])
    proc, seconds = run_report("--quick", "--out", str(out), "--sections", "3.2,1.2")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["sections"] == ["1.2", "3.2"]                    # page order
    assert numbers(parse(out).headings) == ["1.2", "3.2"]
    assert list(m["ood"]) == ["KMNIST"]
    assert m["model"]["how"].startswith("reused")             # OUT/model.npz matched the quick recipe
    assert m["timings"]["train_seconds"] == 0
    for link in parse(out).links:
        assert (out / link).is_file(), link
    # figures of the earlier, larger report are removed, the new ones kept
    figs = set(m["figures"])
    assert figs and figs <= old_figs
    assert {p.name for p in out.glob("*.png")} == figs


def test_model_option_and_classes(quick_report, tmp_path):
    src, _, _ = quick_report
    out = tmp_path / "with_model"
    proc, _ = run_report("--model", str(src / "model.npz"), "--out", str(out), "--sections", "2.4,2.6",
                         "--classes", "1,2,3")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"]["how"].startswith("loaded from")
    assert m["config"]["classes"] == [1, 2, 3]
    heads = parse(out).headings
    assert numbers(heads) == ["2.4", "2.6"]
    assert "\u201c1\u201d" in heads[0] and "\u201c3\u201d" in heads[1]
    assert (out / "model.npz").is_file()


@pytest.mark.parametrize("kind", ["missing", "corrupt", "folder"])
def test_bad_model_is_a_clean_error(tmp_path, kind):
    bad = tmp_path / "bad.npz"
    if kind == "corrupt":
        bad.write_bytes(b"this is not a zip file" * 10)
    elif kind == "folder":
        bad.mkdir()
    out = tmp_path / "out"
    proc, _ = run_report("--model", str(bad), "--out", str(out))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("uqattr: error:") and "--model" in proc.stderr, proc.stderr
    assert str(bad) in proc.stderr
    assert not out.exists()                                  # nothing written
    assert not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize("args, words", [(["--sections", "9.9"], "unknown report section"),
                                         (["--classes", "4,8"], "--classes")])
def test_bad_options_are_clean_errors(tmp_path, args, words):
    proc, _ = run_report("--quick", "--out", str(tmp_path / "out"), *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and words in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
