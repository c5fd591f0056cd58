"""Figures in the layout of the study's slides. Every function returns a
matplotlib Figure; nothing is shown or saved unless the caller does so."""
import numpy as np

MAP_TITLES = {"total": "Total Uncertainty", "epistemic": "Epistemic Uncertainty",
              "aleatoric": "Aleatoric Uncertainty", "max_prob": "Ensemble Saliency Map"}


def describe(pred, prob, label=None, name=None):
    """Title of an image as on the slides: "Label: 4 / Prediction: 4 (Prob: 0.41)"."""
    head = f"Label: {label}" if label is not None else (f"Image: {name}" if name is not None else "Image")
    return f"{head}\nPrediction: {int(pred)} (Prob: {float(prob):.2f})"


def _figure(rows, cols, cell=2.6):
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.3), squeeze=False)
    return fig, axes


def _show_map(fig, ax, m, title, signed, vmax=None):
    m = np.asarray(m, dtype=np.float64)
    if signed:
        v = vmax if vmax is not None else (np.max(np.abs(m)) or 1.0)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-v, vmax=v)
    else:
        im = ax.imshow(m, cmap="inferno", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    _colorbar(fig, ax, im)


def _colorbar(fig, ax, im):
    """Colorbar beside ``ax``. Tiny or huge ranges (e.g. saliency of saturated
    predictions, ~1e-8) get ticks like "2e-08" instead of matplotlib's offset
    text ("1e-8"), which sits above the bar and runs into the map's title."""
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    top = max(abs(v) for v in im.get_clim())
    if top and (top < 1e-2 or top >= 1e4):
        from matplotlib.ticker import FuncFormatter
        cb.formatter = FuncFormatter(lambda v, _: "0" if v == 0 else f"{v:.0e}")
        cb.update_ticks()
    return cb


def _show_image(ax, img, title):
    ax.imshow(np.asarray(img).reshape(np.asarray(img).shape[-2:]), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_uncertainty_maps(images, maps, titles, order=("total", "epistemic", "aleatoric"), signed=True,
                          shared_scale=False, suptitle=None):
    """One row per image: the image titled with ``titles[i]``, then one map per
    name in ``order`` from ``maps`` (dict name -> (N, H, W)), each with its
    colorbar. Signed maps use a diverging colormap centred at 0; with
    ``shared_scale`` all maps of a row share one symmetric range."""
    images = np.asarray(images)
    n = len(images)
    fig, axes = _figure(n, 1 + len(order))
    for i in range(n):
        _show_image(axes[i, 0], images[i], titles[i])
        vmax = max(float(np.max(np.abs(maps[k][i]))) for k in order) if shared_scale else None
        for j, k in enumerate(order):
            m = maps[k][i] if signed else np.abs(maps[k][i])
            _show_map(fig, axes[i, j + 1], m, MAP_TITLES.get(k, str(k)), signed, vmax)
    if suptitle:
        fig.suptitle(suptitle, fontsize=14)
    fig.tight_layout()
    return fig


def plot_saliency(images, saliency, titles, columns=3, signed=True, map_title="Ensemble Saliency Map",
                  suptitle=None):
    """Pairs (image, saliency map), ``columns`` pairs per row, as the study's
    ensemble saliency slides."""
    images = np.asarray(images)
    n = len(images)
    rows = int(np.ceil(n / columns))
    fig, axes = _figure(rows, 2 * columns)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        a_img, a_map = axes[r, 2 * c], axes[r, 2 * c + 1]
        a_img.axis("on")
        a_map.axis("on")
        _show_image(a_img, images[i], titles[i])
        _show_map(fig, a_map, saliency[i], map_title, signed)
    if suptitle:
        fig.suptitle(suptitle, fontsize=14)
    fig.tight_layout()
    return fig


def plot_edit(original, edited, maps_original, maps_edited, title_original, title_edited,
              order=("total", "epistemic", "aleatoric")):
    """Two rows: the original image and its maps, the edited image and its
    maps, with a shared symmetric range per map column so the change shows."""
    fig, axes = _figure(2, 1 + len(order))
    _show_image(axes[0, 0], original, title_original)
    _show_image(axes[1, 0], edited, title_edited)
    for j, k in enumerate(order):
        v = max(float(np.max(np.abs(maps_original[k]))), float(np.max(np.abs(maps_edited[k])))) or 1.0
        _show_map(fig, axes[0, j + 1], maps_original[k], MAP_TITLES.get(k, k), True, v)
        _show_map(fig, axes[1, j + 1], maps_edited[k], MAP_TITLES.get(k, k), True, v)
    fig.tight_layout()
    return fig
