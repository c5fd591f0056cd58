"""uqattr.edit: hand erasures, salient / random erasures, gradient edits within a budget.

The pixel edits are checked on constructed images and attributions where the
answer is known; the gradient edits on the shared ``small_ensemble`` with a
few MNIST test images and few steps (fast).
"""
import numpy as np
import pytest

from uqattr import edit


def _blob_images(n=3, seed=0):
    """(n, 1, 8, 8) images: a bright block of distinct values on a dark background
    with a few faint pixels below the stroke threshold."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 8, 8), dtype=np.float32)
    for i in range(n):
        h = 2 + i                      # 2x4, 3x4, 4x4 blocks: 8, 12, 16 stroke pixels
        x[i, 0, 1:1 + h, 2:6] = rng.uniform(0.3, 1.0, size=(h, 4))
        x[i, 0, 7, :3] = 0.05          # faint, not stroke
    return x


def _frozen(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


# ---- erase --------------------------------------------------------------------------------------

def test_erase_known_mask_all_layouts():
    x = _frozen(np.arange(2 * 16, dtype=np.float32).reshape(2, 1, 4, 4) / 32)
    mask = np.zeros((2, 4, 4), dtype=bool)
    mask[0, 1, 2] = mask[1, 0, 0] = mask[1, 3, 3] = True
    out = edit.erase(x, mask)
    want = x.copy()
    want[0, 0, 1, 2] = want[1, 0, 0, 0] = want[1, 0, 3, 3] = 0
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, want)
    # the same with a channel axis on the mask, on (N, H, W) images, and with a value
    np.testing.assert_array_equal(edit.erase(x, mask[:, None]), want)
    np.testing.assert_array_equal(edit.erase(x[:, 0], mask), want[:, 0])
    out = edit.erase(x, mask, value=0.3)
    assert out[0, 0, 1, 2] == np.float32(0.3) and np.count_nonzero(out != x) == 3


def test_erase_single_image_and_broadcast_mask():
    x = _frozen(np.full((4, 4), 0.7, dtype=np.float64))
    m = np.eye(4, dtype=np.int64)                 # integer 0/1 masks are fine
    out = edit.erase(x, m)
    assert out.shape == (4, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out, np.where(np.eye(4, dtype=bool), 0.0, 0.7))
    # one (H, W) mask for a batch
    xb = _frozen(np.full((3, 1, 4, 4), 0.7, dtype=np.float32))
    ob = edit.erase(xb, m.astype(bool))
    assert np.all(ob[:, 0] == np.where(np.eye(4, dtype=bool), 0.0, 0.7).astype(np.float32))


def test_erase_bad_inputs():
    x = np.zeros((2, 1, 4, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="floating"):
        edit.erase(x.astype(np.uint8), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        edit.erase(x, np.zeros((3, 4, 4), bool))
    with pytest.raises(ValueError, match="shape"):
        edit.erase(x, np.zeros((4, 5), bool))
    with pytest.raises(TypeError, match="mask"):
        edit.erase(x, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="0 and 1"):
        edit.erase(x, np.full((2, 4, 4), 2))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        edit.erase(bad, np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="single"):
        edit.erase(np.zeros(16, np.float32), np.zeros(16, bool))
    with pytest.raises(TypeError, match="value"):
        edit.erase(x, np.zeros((2, 4, 4), bool), value="black")


# ---- erase_salient / erase_random ---------------------------------------------------------------

def test_erase_counts_per_image():
    x = _blob_images()                                  # 8, 12, 16 stroke pixels
    np.testing.assert_array_equal(edit.erase_counts(x, 0.2), [2, 2, 3])      # 1.6, 2.4, 3.2 rounded
    np.testing.assert_array_equal(edit.erase_counts(x, 0.25), [2, 3, 4])     # 2, 3, 4 exactly
    np.testing.assert_array_equal(edit.erase_counts(x, 1.0), [8, 12, 16])
    np.testing.assert_array_equal(edit.erase_counts(x, 0.01), [1, 1, 1])     # at least 1
    empty = np.zeros((2, 8, 8), np.float32)
    np.testing.assert_array_equal(edit.erase_counts(empty, 0.5), [0, 0])     # no strokes, nothing to erase
    np.testing.assert_array_equal(edit.erase_counts(x, 0.5, stroke_threshold=0.01), [6, 8, 10])  # 11, 15, 19: 5.5 -> 6


def test_erase_salient_picks_top_k_stroke_pixels():
    x = _frozen(_blob_images())
    rng = np.random.default_rng(1)
    att = rng.normal(size=(3, 8, 8))                    # as attr.py returns: no channel axis
    att[:, 7, :3] = 100.0                               # huge but not stroke: never picked
    out, mask = edit.erase_salient(x, att, fraction=0.25, return_mask=True)
    assert mask.shape == x.shape and mask.dtype == bool
    stroke = x[:, 0] > 0.1
    for i, k in enumerate([2, 3, 4]):
        cand = np.flatnonzero(stroke[i])
        top = cand[np.argsort(-att[i].ravel()[cand])[:k]]
        assert set(np.flatnonzero(mask[i, 0])) == set(top)
        assert np.all(out[i, 0].ravel()[top] == 0)
    np.testing.assert_array_equal(out[~mask], x[~mask])
    # unsigned: by magnitude; a strongly negative pixel now comes first
    att2 = np.zeros((3, 8, 8))
    att2[:, 1, 2] = -5.0
    att2[:, 1, 3] = 1.0
    _, m_signed = edit.erase_salient(x, att2, fraction=0.01, return_mask=True)
    _, m_abs = edit.erase_salient(x, att2, fraction=0.01, signed=False, return_mask=True)
    assert np.all(m_signed[:, 0, 1, 3]) and np.all(m_abs[:, 0, 1, 2])
    assert m_signed.sum() == m_abs.sum() == 3


def test_erase_salient_ties_value_and_shapes():
    x = _frozen(_blob_images())
    # all-equal attribution: lowest row-major indices of the stroke go first
    _, mask = edit.erase_salient(x, np.zeros_like(x), fraction=0.25, return_mask=True)
    first = np.flatnonzero(x[0, 0] > 0.1)[:2]
    assert set(np.flatnonzero(mask[0, 0])) == set(first)
    out = edit.erase_salient(x, np.zeros_like(x), fraction=0.25, value=0.5)
    assert np.count_nonzero(out == 0.5) == 2 + 3 + 4
    # single (H, W) image in, single image out
    single, m1 = edit.erase_salient(x[1, 0], x[1, 0], fraction=1.0, return_mask=True)
    assert single.shape == (8, 8) and m1.sum() == 12 and np.all(single[m1] == 0)
    # fraction 1 erases every stroke pixel
    np.testing.assert_array_equal(edit.erase_salient(x, x, fraction=1.0) > 0.1, np.zeros(x.shape, bool))


def test_erase_random_same_counts_and_seeded():
    x = _frozen(_blob_images())
    _, m1 = edit.erase_random(x, 0.2, seed=3, return_mask=True)
    _, m2 = edit.erase_random(x, 0.2, seed=3, return_mask=True)
    _, m3 = edit.erase_random(x, 0.2, seed=4, return_mask=True)
    _, ms = edit.erase_salient(x, -x, 0.2, return_mask=True)
    np.testing.assert_array_equal(m1.reshape(3, -1).sum(1), edit.erase_counts(x, 0.2))
    np.testing.assert_array_equal(m1.reshape(3, -1).sum(1), ms.reshape(3, -1).sum(1))
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    assert np.all(x[m1] > 0.1)                           # stroke pixels only
    # every stroke pixel gets picked sometimes
    hits = sum(edit.erase_random(x, 0.2, seed=s, return_mask=True)[1] for s in range(200))
    assert np.all((hits > 0) == (x > 0.1))


def test_salient_bad_inputs():
    x = _blob_images()
    att = np.zeros((3, 8, 8))
    for f in (0, -0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match="fraction"):
            edit.erase_salient(x, att, fraction=f)
        with pytest.raises(ValueError, match="fraction"):
            edit.erase_random(x, fraction=f)
    with pytest.raises(TypeError, match="fraction"):
        edit.erase_salient(x, att, fraction="0.2")
    with pytest.raises(ValueError, match="attribution"):
        edit.erase_salient(x, np.zeros((2, 8, 8)))       # wrong N
    with pytest.raises(ValueError, match="attribution"):
        edit.erase_salient(x, np.zeros((8, 8)))          # no broadcasting of one attribution
    bad = att.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        edit.erase_salient(x, bad)
    with pytest.raises(TypeError, match="attribution"):
        edit.erase_salient(x, att.astype(bool))
    with pytest.raises(TypeError, match="stroke_threshold"):
        edit.erase_random(x, stroke_threshold=None)


# ---- along_gradient -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def few_images(mnist_test):
    x, y = mnist_test
    return _frozen(x[:4]), y[:4]


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 1.0, 0.4)])
def test_along_gradient_box_and_ball(small_ensemble, few_images, norm, eps, step):
    x, _ = few_images
    before = x.copy()
    out = edit.along_gradient(small_ensemble, x, steps=6, step_size=step, eps=eps, norm=norm)
    np.testing.assert_array_equal(x, before)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    d = (out.astype(np.float64) - x).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.sqrt((d ** 2).sum(1))
    assert np.all(size <= eps + 1e-6)
    assert np.all(size > 0.5 * eps)                      # it does move (6 steps reach the budget)


@pytest.mark.parametrize("direction", [+1, -1])
def test_along_gradient_direction_moves_target(small_ensemble, mnist_test, direction):
    from uqattr import uncertainty
    x, _ = mnist_test
    u = uncertainty(small_ensemble, x[:300])
    # confident images to make uncertain, uncertain ones to make confident
    idx = u.least_uncertain(3) if direction > 0 else u.most_uncertain(3)
    xs = _frozen(x[idx])
    out, trace = edit.along_gradient(small_ensemble, xs, steps=5, step_size=0.02, eps=0.1, direction=direction,
                                     return_trace=True)
    assert trace.shape == (6, 3)
    np.testing.assert_allclose(trace[0], u.total[idx], rtol=1e-4, atol=1e-6)
    after = uncertainty(small_ensemble, out).total
    np.testing.assert_allclose(trace[-1], after, rtol=1e-4, atol=1e-6)
    if direction > 0:
        assert np.all(after > u.total[idx])
    else:
        assert np.all(after < u.total[idx])


def test_along_gradient_other_targets_shapes_and_proximity(small_ensemble, few_images):
    x, y = few_images
    # (N, 28, 28) in, same out; lowering the true class's probability
    out, tr = edit.along_gradient(small_ensemble, x[:, 0], target=y, steps=3, direction=-1, eps=0.05,
                                  return_trace=True)
    assert out.shape == (4, 28, 28) and np.all(tr[-1] < tr[0])
    single = edit.along_gradient(small_ensemble, x[0, 0], steps=2, eps=0.05)
    assert single.shape == (28, 28)
    np.testing.assert_array_equal(edit.along_gradient(small_ensemble, x, steps=0), x)
    # a strong proximity penalty keeps the edit smaller than without it (L2 steps)
    free = edit.along_gradient(small_ensemble, x, steps=8, step_size=0.5, eps=None, norm="l2")
    held = edit.along_gradient(small_ensemble, x, steps=8, step_size=0.5, eps=None, norm="l2", proximity=50.0)
    dist = lambda a: np.sqrt(((a - x) ** 2).reshape(4, -1).sum(1))  # noqa: E731
    assert np.all(dist(held) < dist(free))
    # one member alone
    m = edit.along_gradient(small_ensemble, x, target="aleatoric", steps=2, eps=0.05, member=1)
    assert m.shape == x.shape


def test_along_gradient_bad_inputs(small_ensemble, few_images):
    x, _ = few_images
    ens = small_ensemble
    cases = [
        (dict(norm="l1"), ValueError, "norm"),
        (dict(norm=2), TypeError, "norm"),
        (dict(direction=0), ValueError, "direction"),
        (dict(direction=2), ValueError, "direction"),
        (dict(eps=0), ValueError, "eps"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(step_size=0), ValueError, "step_size"),
        (dict(steps=-1), ValueError, "steps"),
        (dict(steps=2.5), TypeError, "steps"),
        (dict(proximity=-1), ValueError, "proximity"),
        (dict(target="entropy"), ValueError, "target"),
        (dict(target=np.array([0, 1])), ValueError, "class"),
        (dict(target=np.array([0, 1, 2, 10])), ValueError, "classes"),
        (dict(member=7), IndexError, "member"),
        (dict(bounds=(1.0, 0.0)), ValueError, "bounds"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            edit.along_gradient(ens, x, **{"steps": 1, **kwargs})
    bad = x.copy()
    bad[0, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        edit.along_gradient(ens, bad, steps=1)
    with pytest.raises(ValueError, match="outside bounds"):
        edit.along_gradient(ens, x * 2 + 0.1, steps=1)
    with pytest.raises(ValueError, match="shape"):
        edit.along_gradient(ens, np.zeros((2, 1, 27, 28), np.float32), steps=1)
    with pytest.raises(TypeError, match="floating"):
        edit.along_gradient(ens, (x * 255).astype(np.uint8), steps=1)


# ---- report and figure --------------------------------------------------------------------------

def test_edit_report_and_plot(small_ensemble, few_images):
    from uqattr import uncertainty
    x, y = few_images
    erased = edit.erase_random(x, 0.3, seed=0)
    rep = edit.edit_report(small_ensemble, x, erased, labels=y)
    u0, u1 = uncertainty(small_ensemble, x), uncertainty(small_ensemble, erased)
    np.testing.assert_array_equal(rep["pred_before"], u0.pred)
    np.testing.assert_allclose(rep["total_after"], u1.total)
    np.testing.assert_allclose(rep["orig_class_prob_after"], u1.mean_probs[np.arange(4), u0.pred])
    np.testing.assert_array_equal(rep["correct_before"], u0.pred == y)
    assert np.all(rep["linf"] > 0) and np.all(rep["l2"] >= rep["linf"])
    text = edit.format_report(rep)
    assert "mean" in text and len(text.splitlines()) == 1 + 4 + 1
    with pytest.raises(ValueError, match="same shape"):
        edit.edit_report(small_ensemble, x, erased[:2])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = edit.plot_before_after(small_ensemble, x, erased, index=1, label=int(y[1]))
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles[0].startswith(f"Label: {int(y[1])}\nPrediction: {int(u0.pred[1])}")
        assert any("(edited)" in t for t in titles)
        assert sum("Total Uncertainty" in t for t in titles) == 2
    finally:
        plt.close(fig)
    with pytest.raises(IndexError):
        edit.plot_before_after(small_ensemble, x, erased, index=9)
