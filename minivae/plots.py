"""Pictures of a trained VAE as PNG files: samples from the prior, reconstructions of held-out inputs, paths
between two codes, the learned 2-D manifold and the codes of held-out data, and the training curves.

References: Kingma & Welling 2013, "Auto-Encoding Variational Bayes", Fig. 4 (the manifold of a 2-D latent
space, decoded over the prior's quantiles) and Fig. 5 (samples); Shoemake 1985 and White 2016, "Sampling
Generative Networks" (spherical interpolation). Tests: tests/test_plots.py.

Headless: figures are bare ``matplotlib.figure.Figure`` objects drawn by the Agg canvas. pyplot is never
imported, so the user's backend and open figures are left alone. Each file is written atomically
(``checkpoint.atomic_write``).

Host-side: the model runs on its own device; its inputs are built there with ``Device.asarray`` and what it
returns comes to the host with ``to_host``. Every random draw (z ~ N(0, I), noise of a sampled code, draws
from p(x|z)) comes from a seeded ``minivae.rng.RNG``, so one seed gives the same picture.

Layout of the image pictures, in inches at DPI dots per inch: every length is a multiple of 1/4 inch, so every
figure is a whole number of pixels. An image panel of R rows and C columns of tiles is C * TILE wide and
R * TILE high, with a TITLE band above it; panels are separated by MARGIN, and the figure has MARGIN around
its panels (LABEL on the left where rows carry labels). Pixel values are drawn in grey from 0 (black) to 1
(white), the range minivae scales images to; values outside it (a Gaussian decoder's means or draws) are clipped
in the picture. Tiles are separated by a line of SEPARATOR one image pixel wide.
"""
import io
import itertools
import math

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .backend import to_host
from .checkpoint import atomic_write
from .reparam import reparameterize_forward
from .rng import RNG

DPI = 100
TILE = 0.5          # inches per image tile (50 pixels)
MARGIN = 0.25       # inches around and between panels
TITLE = 0.5         # inches above each image panel, for its title
LABEL = 1.25        # inches left of a panel whose rows carry labels
AXIS = 0.75         # inches for tick labels and an axis name (the manifold)
SEPARATOR = "#5b8dc9"
INTERPOLATIONS = ("linear", "slerp")

# ---- checks -------------------------------------------------------------------------------------------


def _count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _image_shape(image_shape, model):
    """(height, width) with height * width = model.x_dim, or a ValueError saying why not."""
    if image_shape is None:
        raise ValueError("this picture needs an image shape (height, width), and the data has none "
                         "(it is not a dataset of images)")
    try:
        h, w = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be (height, width), got {image_shape!r}") from None
    if h <= 0 or w <= 0 or h * w != model.x_dim:
        raise ValueError(f"image_shape {h}x{w} has {h * w} pixels but the model's x_dim is {model.x_dim}")
    return h, w


def _host_inputs(x, model, need, why, name="x"):
    """x as a host float64 (N, x_dim) array with at least ``need`` rows, or a ValueError."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != model.x_dim:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{name} must be a NumPy array of shape (N, {model.x_dim}), got {shape}")
    if x.dtype.kind != "f" or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must hold finite floating-point values")
    if x.shape[0] < need:
        raise ValueError(f"{name} has {x.shape[0]} examples, fewer than the {need} that {why} asks for")
    return x


def _two_d(model):
    if model.z_dim != 2:
        raise ValueError(f"the model has z_dim {model.z_dim}; the manifold and the code scatter need a 2-D "
                         f"latent space (train with --z-dim 2)")


# ---- the model, on its device; results on the host --------------------------------------------------------


def decoder_mean(model, z):
    """E[x | z] on the host, (N, D) float64, for codes z: (N, Z) on the model's device: the likelihood's mean
    (``model.decoder_mean``): sigmoid(logits) for the Bernoulli, the mean for the Gaussian, the expected level
    over L - 1 for the categorical, an intensity in [0, 1] like the data it models."""
    return to_host(model.decoder_mean(z)).astype(np.float64)


def sample_likelihood(model, z, rng):
    """One draw x ~ p(x | z) for each row of z: (N, Z) on the model's device; host (N, D) float64
    (``model.sample_x``: Bernoulli 0/1 pixels, Gaussian draws with the variance after the floor, categorical
    levels by inverse-CDF sampling as intensities). ``rng`` is a ``minivae.rng.RNG``; the draws are made on the
    host."""
    return model.sample_x(z, rng)


def encode_means(model, x, batch_size=1000):
    """The codes mu of q(z|x) for host inputs x: (N, D), on the host, (N, Z) float64."""
    mus = []
    for start in range(0, x.shape[0], batch_size):
        xb = model.device.asarray(x[start:start + batch_size], dtype=model.dtype_name)
        mu, _ = model.encode(xb)
        mus.append(to_host(mu).astype(np.float64))
    return np.concatenate(mus, axis=0)


# ---- interpolation and the quantile grid (host NumPy) ------------------------------------------------------


def lerp(z0, z1, t):
    """Linear interpolation z(t) = (1 - t) z0 + t z1.  z0, z1: (Z,), t: (T,) -> (T, Z)."""
    t = np.asarray(t, dtype=np.float64)[:, None]                     # (T, 1)
    return (1.0 - t) * z0[None, :] + t * z1[None, :]


def slerp(z0, z1, t):
    """Spherical linear interpolation (Shoemake 1985; White 2016).  z0, z1: (Z,), t: (T,) -> (T, Z).

        z(t) = sin((1 - t) omega) / sin(omega) z0 + sin(t omega) / sin(omega) z1,
        cos(omega) = z0 . z1 / (|z0| |z1|),

    the arc of the great circle through z0 and z1: z(0) = z0, z(1) = z1, and for |z0| = |z1| = r every point
    has norm r. Why it suits the prior N(0, I_Z): |z|^2 is chi-squared with Z degrees of freedom, so samples
    concentrate near a shell of radius ~sqrt(Z) (the norm's spread is about 1/sqrt(2) whatever Z), and there is
    almost no prior mass near the centre when Z is large. Two codes are nearly orthogonal, so the linear
    midpoint has norm ~sqrt(Z / 2): it falls inside the shell, where the decoder was rarely trained; slerp keeps
    to the shell. Where the angle is (numerically) 0 or pi the great circle is not defined by the two points and
    this returns the linear path.
    """
    t = np.asarray(t, dtype=np.float64)[:, None]                     # (T, 1)
    r0, r1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if r0 == 0.0 or r1 == 0.0:
        return lerp(z0, z1, t[:, 0])
    cos_omega = np.clip(np.dot(z0, z1) / (r0 * r1), -1.0, 1.0)
    omega = np.arccos(cos_omega)
    sin_omega = np.sin(omega)
    if sin_omega < 1e-6:
        return lerp(z0, z1, t[:, 0])
    return (np.sin((1.0 - t) * omega) * z0[None, :] + np.sin(t * omega) * z1[None, :]) / sin_omega


def interpolate(z0, z1, steps, kind="linear"):
    """``steps`` evenly spaced points t in [0, 1] of the path from z0 to z1, both ends included: (steps, Z).

    kind: "linear" (``lerp``) or "slerp" (``slerp``).
    """
    steps = _count(steps, "steps", 2)
    if kind not in INTERPOLATIONS:
        raise ValueError(f"kind must be one of {', '.join(INTERPOLATIONS)}; got {kind!r}")
    t = np.linspace(0.0, 1.0, steps)
    z0, z1 = np.asarray(z0, dtype=np.float64), np.asarray(z1, dtype=np.float64)
    return lerp(z0, z1, t) if kind == "linear" else slerp(z0, z1, t)


def prior_quantile_grid(n):
    """The n values z_i = Phi^{-1}((i + 1/2) / n), i = 0..n-1, of the N(0, 1) prior: the medians-in-probability
    of n equally likely intervals, so each tile of the manifold stands for the same prior mass (K&W 2013, Fig.
    4). Increasing and symmetric about 0; for n = 15 it spans +-1.83."""
    from scipy.stats import norm
    n = _count(n, "n")
    return norm.ppf((np.arange(n) + 0.5) / n)                        # (n,)


# ---- drawing --------------------------------------------------------------------------------------------


def tile_images(images, image_shape, cols):
    """Arrange images (N, H*W), row-major, into one mosaic (R*(H+1) - 1, C*(W+1) - 1), R = ceil(N / C),
    with a one-pixel NaN line between tiles and NaN in unused cells (both drawn in SEPARATOR)."""
    h, w = image_shape
    n = images.shape[0]
    rows = -(-n // cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        mosaic[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[i].reshape(h, w)
    return mosaic


def _figure(width, height):
    """A headless figure ``width`` x ``height`` inches at DPI, on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _show(ax, mosaic, title, row_labels=None):
    """Draw a mosaic in grey on [0, 1], without ticks; ``row_labels`` name its rows of tiles."""
    cmap = matplotlib.colormaps["gray"].with_extremes(bad=SEPARATOR)
    ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    if row_labels:
        cell = (mosaic.shape[0] + 1) / len(row_labels)                  # H + 1 mosaic pixels per tile row
        ax.set_yticks([(i + 0.5) * cell - 1.0 for i in range(len(row_labels))], labels=row_labels, fontsize=9)
        ax.tick_params(axis="y", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)


def _panels(panels, vertical):
    """A figure of image panels, side by side or stacked. Each panel is (title, mosaic, rows, cols,
    row_labels or None); rows and cols count tiles. Returns the figure (sizes: see the module docstring)."""
    left = LABEL if any(p[4] for p in panels) else MARGIN
    if vertical:
        width = left + max(p[3] for p in panels) * TILE + MARGIN
        height = MARGIN + sum(p[2] * TILE + TITLE for p in panels)
    else:
        width = left + sum(p[3] * TILE + MARGIN for p in panels)
        height = MARGIN + max(p[2] for p in panels) * TILE + TITLE
    fig = _figure(width, height)
    x, top = left, height
    for title, mosaic, rows, cols, row_labels in panels:
        top -= TITLE
        rect = (x / width, (top - rows * TILE) / height, cols * TILE / width, rows * TILE / height)
        _show(fig.add_axes(rect), mosaic, title, row_labels)
        if vertical:
            top -= rows * TILE
        else:
            x += cols * TILE + MARGIN
            top = height
    return fig


def check_png_path(path, name="out"):
    """``path`` must name a .png file: minivae draws PNG, and a .jpg holding PNG bytes misleads every viewer."""
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"{name} {str(path)!r} must be a .png file (the pictures are PNG)")
    return path


def _save(fig, path):
    """Render ``fig`` to PNG in memory, then write it to ``path`` atomically. Returns ``path``."""
    check_png_path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    try:
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    except OSError as e:                    # name the file asked for, not atomic_write's temporary file
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# ---- the pictures ---------------------------------------------------------------------------------------


def plot_samples(model, image_shape, path, n=64, seed=0, from_likelihood=False):
    """Decode n codes z ~ p(z), the model's prior (N(0, I) or its mixture; ``model.sample_prior``, drawn from
    RNG(seed)) and draw a grid of ceil(sqrt(n)) columns: the decoder mean E[x|z] (panel "E[x | z], z ~ N(0, I)",
    or "z ~ p(z)" for a mixture), and with ``from_likelihood`` beside it one draw x ~ p(x|z) for each of the
    same z (panel "x ~ p(x | z)": Bernoulli 0/1 pixels or Gaussian draws). Returns ``path``."""
    h_w = _image_shape(image_shape, model)
    n = _count(n, "n")
    rng = RNG(seed)
    z = model.sample_prior(n, rng)                                       # (n, Z) on the device
    cols = math.ceil(math.sqrt(n))
    rows = -(-n // cols)
    title = f"E[x | z], z ~ {model.prior.label}"
    panels = [(title, tile_images(decoder_mean(model, z), h_w, cols), rows, cols, None)]
    if from_likelihood:
        draws = sample_likelihood(model, z, rng)
        panels.append(("x ~ p(x | z)", tile_images(draws, h_w, cols), rows, cols, None))
    return _save(_panels(panels, vertical=False), path)


def plot_reconstructions(model, x, image_shape, path, n=16, sampled=False, seed=0, per_row=8):
    """The first n inputs of x (host (N, D)) above their reconstructions: the decoder mean at z = mu of
    q(z|x), and with ``sampled`` also at one z = mu + sigma * eps, eps ~ N(0, I) from RNG(seed). Blocks of
    ``per_row`` examples are stacked, each with its rows labelled. Returns ``path``."""
    h_w = _image_shape(image_shape, model)
    n = _count(n, "n")
    per_row = _count(per_row, "per_row")
    x = _host_inputs(x, model, n, f"n = {n}")[:n]
    xd = model.device.asarray(x, dtype=model.dtype_name)                  # (n, D) on the device
    mu, logvar = model.encode(xd)                                          # (n, Z)
    rows = [("input", x), ("E[x | z = mu]", decoder_mean(model, mu))]
    if sampled:
        eps = RNG(seed).normal((n, model.z_dim), model.device, model.dtype_name)
        z, _ = reparameterize_forward(mu, logvar, eps)
        rows.append(("E[x | z ~ q(z|x)]", decoder_mean(model, z)))
    panels = []
    for start in range(0, n, per_row):
        stop = min(start + per_row, n)
        block = np.concatenate([images[start:stop] for _, images in rows], axis=0)
        mosaic = tile_images(block, h_w, stop - start)
        panels.append((f"held-out examples {start + 1}-{stop}", mosaic, len(rows), stop - start,
                       [label for label, _ in rows]))
    return _save(_panels(panels, vertical=True), path)


def plot_interpolations(model, x, image_shape, path, pairs=4, steps=10, kind="both", seed=0):
    """For ``pairs`` pairs of inputs drawn from x (host (N, D)) with RNG(seed), one row each decoding
    E[x|z] along the path from the first input's code mu to the second's in ``steps`` steps (both ends are
    the reconstructions at mu). kind: "linear", "slerp" or "both" (a panel of each, same pairs).
    Returns ``path``."""
    h_w = _image_shape(image_shape, model)
    pairs = _count(pairs, "pairs")
    steps = _count(steps, "steps", 2)
    kinds = INTERPOLATIONS if kind == "both" else (kind,)
    if kind != "both" and kind not in INTERPOLATIONS:
        raise ValueError(f"kind must be linear, slerp or both; got {kind!r}")
    x = _host_inputs(x, model, 2 * pairs, f"pairs = {pairs}")
    idx = RNG(seed).permutation(x.shape[0])[:2 * pairs]
    mu = encode_means(model, x[idx])                                       # (2 pairs, Z)
    titles = {"linear": "linear path", "slerp": "spherical path (slerp)"}
    panels = []
    for k in kinds:
        path_z = np.concatenate([interpolate(mu[2 * i], mu[2 * i + 1], steps, k) for i in range(pairs)])
        images = decoder_mean(model, model.device.asarray(path_z, dtype=model.dtype_name))
        panels.append((titles[k], tile_images(images, h_w, steps), pairs, steps, None))
    return _save(_panels(panels, vertical=True), path)


def plot_latent_manifold(model, image_shape, path, n=15):
    """For a 2-D latent space, E[x|z] at each z = (z1, z2) of an n x n grid over the prior's quantiles
    (``prior_quantile_grid``): z1 grows to the right, z2 upwards; ticks give the z values. Returns ``path``."""
    _two_d(model)
    h_w = _image_shape(image_shape, model)
    q = prior_quantile_grid(n)                                             # (n,)
    z1, z2 = np.meshgrid(q, q[::-1])                                       # row 0 is the largest z2
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)                         # (n*n, 2), row-major tiles
    images = decoder_mean(model, model.device.asarray(z, dtype=model.dtype_name))
    mosaic = tile_images(images, h_w, n)
    width, height = AXIS + n * TILE + MARGIN, AXIS + n * TILE + TITLE
    fig = _figure(width, height)
    ax = fig.add_axes((AXIS / width, AXIS / height, n * TILE / width, n * TILE / height))
    _show(ax, mosaic, "E[x | z] over the prior's quantiles")
    h, w = h_w
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(n)], labels=[f"{v:.2f}" for v in q],
                  fontsize=7, rotation=90)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(n)], labels=[f"{v:.2f}" for v in q[::-1]],
                  fontsize=7)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    return _save(fig, path)


def plot_latent_scatter(model, x, path, labels=None):
    """For a 2-D latent space, the codes mu of q(z|x) of the inputs x (host (N, D)) as points, coloured by
    ``labels`` (a legend for up to 10 classes, a colorbar beyond), with the prior's 1 and 2 standard
    deviation circles dashed. Figure 6 x 5 inches. Returns ``path``."""
    _two_d(model)
    x = _host_inputs(x, model, 1, "a scatter")
    mu = encode_means(model, x)                                            # (N, 2)
    fig = _figure(6.0, 5.0)
    ax = fig.add_axes((0.75 / 6.0, 0.6 / 5.0, 4.25 / 6.0, 3.9 / 5.0))       # 1 inch on the right for the key
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=6, alpha=0.7)
    else:
        labels = np.asarray(labels)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have one entry per example of x: shape {labels.shape} for "
                             f"{x.shape[0]} examples")
        classes = np.unique(labels)
        if len(classes) <= 10:
            colours = matplotlib.colormaps["tab10"]
            for i, c in enumerate(classes):
                keep = labels == c
                ax.scatter(mu[keep, 0], mu[keep, 1], s=6, alpha=0.7, color=colours(i), label=str(c))
            ax.legend(title="label", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                      markerscale=2, frameon=False)
        else:
            points = ax.scatter(mu[:, 0], mu[:, 1], s=6, alpha=0.7, c=labels, cmap="viridis")
            fig.colorbar(points, ax=ax, label="label")
    angle = np.linspace(0.0, 2.0 * np.pi, 200)
    for r in (1.0, 2.0):
        ax.plot(r * np.cos(angle), r * np.sin(angle), "--", color="0.5", linewidth=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("mu_1")
    ax.set_ylabel("mu_2")
    ax.set_title(f"codes mu of q(z|x), {x.shape[0]} held-out inputs; dashed: 1 and 2 sd of p(z)", fontsize=9)
    return _save(fig, path)


POSTERIOR_COLOUR = "#d62728"      # q(z|x): its ellipses (z_dim 2) or its density (z_dim 1)
POSTERIOR_PANEL = (3.5, 4.25)      # inches per example: the key, three title lines, the panel
VIEW_CUT = 1e-3                    # the view keeps where p(z|x) > VIEW_CUT x its peak, and q's 2-sd ellipse


def _view(r, ratio=None):
    """The part of the posterior grid a panel shows: where p(z|x) is above VIEW_CUT of its peak, with q(z|x)'s
    2.5 sd box, padded by a tenth; per axis (lo, hi). With ``ratio`` (a 2-D panel's height / width) the shorter
    side is widened about its centre so that one unit is as long on both axes: circles stay circles."""
    dens = r["density"]
    idx = np.nonzero(dens > VIEW_CUT * np.max(dens))
    view = []
    for j, ax in enumerate(r["axes"]):
        lo = min(ax[np.min(idx[j])], r["mu"][j] - 2.5 * r["sigma"][j])
        hi = max(ax[np.max(idx[j])], r["mu"][j] + 2.5 * r["sigma"][j])
        pad = 0.1 * (hi - lo)
        view.append([lo - pad, hi + pad])
    if ratio is not None:
        (x0, x1), (y0, y1) = view
        if (y1 - y0) < ratio * (x1 - x0):
            grow = (ratio * (x1 - x0) - (y1 - y0)) / 2
            view[1] = [y0 - grow, y1 + grow]
        else:
            grow = ((y1 - y0) / ratio - (x1 - x0)) / 2
            view[0] = [x0 - grow, x1 + grow]
    return view


def plot_posterior(results, path, images=None):
    """The true posterior p(z|x) beside the approximate posterior q(z|x), one panel per example, each titled with
    log p(x), the ELBO and their gap KL(q(z|x) || p(z|x)). ``results``: what minivae/posterior.py:
    posterior_grid returns (z_dim 1 or 2). z_dim 2: p(z|x) as a blue density image, q(z|x) as its 1 and 2 sd
    ellipses in red, mu marked +, one unit as long on both axes. z_dim 1: both densities as curves, q's 1 and 2
    sd intervals shaded. ``images``: optional host (n, H, W) inputs, inset in each panel's corner. Each panel is
    POSTERIOR_PANEL inches. Returns ``path``.  derivations/evaluation.md#the-posterior-gap-drawn"""
    if isinstance(results, dict) or not isinstance(results, (list, tuple)) or not results:
        raise ValueError("results must be the non-empty list that posterior_grid returns")
    z_dim = len(results[0]["axes"])
    if images is not None and len(images) != len(results):
        raise ValueError(f"images must have one entry per result: {len(images)} for {len(results)}")
    n = len(results)
    width, height = POSTERIOR_PANEL
    fig = _figure(width * n, height)
    key = ("blue: the true posterior p(z|x), exact on a grid;  red: q(z|x), 1 sd (solid) and 2 sd (dashed)"
           if z_dim == 2 else "blue: the true posterior p(z|x), exact on a grid;  red: q(z|x), 1 and 2 sd "
           "shaded")
    fig.text(0.5 / (width * n), 1.0 - 0.25 / height, key, fontsize=8.5, va="center")
    for i, r in enumerate(results):
        box = (width - 0.85, height - 1.5)                                   # the panel, inches
        ax = fig.add_axes(((i * width + 0.6) / (width * n), 0.5 / height, box[0] / (width * n), box[1] / height))
        view = _view(r, box[1] / box[0] if z_dim == 2 else None)
        if z_dim == 2:
            (z1, z2), (mu, sigma) = r["axes"], (r["mu"], r["sigma"])
            ax.set_facecolor(matplotlib.colormaps["Blues"](0.0))              # beyond the grid: density ~0
            ax.imshow(r["density"].T, origin="lower", extent=(z1[0], z1[-1], z2[0], z2[-1]), cmap="Blues",
                      aspect="auto", interpolation="bilinear")
            angle = np.linspace(0.0, 2.0 * np.pi, 200)
            for k, style in ((1.0, "-"), (2.0, "--")):
                ax.plot(mu[0] + k * sigma[0] * np.cos(angle), mu[1] + k * sigma[1] * np.sin(angle), style,
                        color=POSTERIOR_COLOUR, linewidth=1.2)
            ax.plot([mu[0]], [mu[1]], "+", color=POSTERIOR_COLOUR, markersize=8)
            ax.set_xlim(*view[0])
            ax.set_ylim(*view[1])
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
        else:
            z, mu, sigma = r["axes"][0], r["mu"][0], r["sigma"][0]
            ax.fill_between(z, r["density"], color="#6baed6", label="p(z|x)")
            ax.plot(z, np.exp(r["log_q"]), color=POSTERIOR_COLOUR, linewidth=1.2, label="q(z|x)")
            for k, alpha in ((2.0, 0.08), (1.0, 0.15)):
                ax.axvspan(mu - k * sigma, mu + k * sigma, color=POSTERIOR_COLOUR, alpha=alpha, linewidth=0, zorder=0)
            ax.set_xlim(*view[0])
            ax.set_xlabel("z")
            ax.set_ylabel("density")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"log p(x) = {r['log_px']:.3f}\nELBO = {r['elbo']:.3f}\n"
                     f"gap = KL(q(z|x) || p(z|x)) = {r['gap']:.3f}", fontsize=8.5)
        ax.tick_params(labelsize=7)
        if images is not None:
            inset = ax.inset_axes((0.02, 0.74, 0.24, 0.24))
            inset.imshow(images[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            inset.set_xticks([])
            inset.set_yticks([])
    return _save(fig, path)


HISTORY_KEYS = ("epoch", "train_loss", "heldout_neg_elbo", "heldout_nll", "heldout_kl")
GOAL_KEYS = ("heldout_log_px", "heldout_exact_elbo", "heldout_gap", "exact_examples")
LOG_PX_COLOUR, GAP_COLOUR, TRADE_COLOUR = "#2ca02c", "#9467bd", "#d62728"


def goal_trades(goals):
    """The epochs (of a history's tracked entries) whose ELBO rose while log p(x) fell, against the entry
    before: where the decoder bought ELBO with likelihood (derivations/elbo.md#what-maximising-the-elbo-does)."""
    return [b["epoch"] for a, b in itertools.pairwise(goals)
            if b["heldout_exact_elbo"] > a["heldout_exact_elbo"] and b["heldout_log_px"] < a["heldout_log_px"]]


def _plot_goals(ax, goals):
    """The two goals over training: log p(x) and the ELBO (left axis), their gap KL(q(z|x) || p(z|x)) (right
    axis), epochs where the ELBO rose while log p(x) fell marked."""
    epoch = np.array([e["epoch"] for e in goals], dtype=float)
    log_px = np.array([e["heldout_log_px"] for e in goals])
    marker = "o" if len(goals) <= 30 else None
    ax.plot(epoch, log_px, marker=marker, markersize=3, color=LOG_PX_COLOUR, label="log p(x) (goal 1)")
    ax.plot(epoch, [e["heldout_exact_elbo"] for e in goals], marker=marker, markersize=3, color=HELDOUT_COLOUR,
            linestyle="--", label="ELBO")
    trades = goal_trades(goals)
    if trades:
        at = np.isin(epoch, trades)
        ax.plot(epoch[at], log_px[at], "v", color=TRADE_COLOUR, markersize=6,
                label=f"ELBO up, log p(x) down ({len(trades)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(epoch, [e["heldout_gap"] for e in goals], marker=marker, markersize=3, color=GAP_COLOUR,
               label="gap = KL(q || p(z|x)) (goal 2, right)")
    right.set_ylabel("gap, nats per example", color=GAP_COLOUR)
    right.tick_params(axis="y", colors=GAP_COLOUR)
    if len(goals) >= 20:                      # the first tenth of training falls fast: keep the rest readable
        late = np.concatenate([log_px[len(goals) // 10:],
                               [e["heldout_exact_elbo"] for e in goals[len(goals) // 10:]]])
        span = np.max(late) - np.min(late)
        ax.set_ylim(np.min(late) - 0.6 * span, np.max(late) + 0.1 * span)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right", framealpha=0.9)
    ax.set_title(f"the two goals: {goals[0]['exact_examples']} held-out, quadrature", fontsize=10)
TRAIN_COLOUR, HELDOUT_COLOUR = "#1f77b4", "#ff7f0e"       # the same in every panel


def plot_loss_curves(history, path):
    """Three panels over the epochs of a training ``history`` (a list of per-epoch dicts, as ``train`` returns
    and metrics.json stores): the negative ELBO (the training loss, averaged over the epoch's minibatches and
    with the KL weighted by beta, against the held-out negative ELBO), the rate KL(q(z|x) || p(z)) and the
    distortion -log p(x|z), held-out and, where every epoch has "train_kl" / "train_nll", training.
    Where epochs carry the two goals (``train --track-exact``: GOAL_KEYS), a fourth panel: log p(x) and the
    ELBO by quadrature, their gap KL(q(z|x) || p(z|x)) on a right-hand axis, and the epochs where the ELBO rose
    while log p(x) fell (``goal_trades``) marked. All in nats per example. Figure 12 x 3.5 inches, 16 x 3.5 with
    the fourth panel. Returns ``path``."""
    if isinstance(history, (str, bytes)) or not hasattr(history, "__len__") or len(history) == 0:
        raise ValueError("history must be a non-empty list of per-epoch dicts")
    for i, entry in enumerate(history):
        missing = [k for k in HISTORY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ValueError(f"history entry {i} lacks {', '.join(missing)}")
    column = lambda key: np.array([float(e[key]) for e in history])       # noqa: E731
    has = lambda key: all(key in e for e in history)                        # noqa: E731
    epoch = column("epoch")
    goals = [e for e in history if all(k in e for k in GOAL_KEYS)]              # epochs with --track-exact
    fig = _figure(16.0 if goals else 12.0, 3.5)
    axes = fig.subplots(1, 4 if goals else 3)
    ax_elbo, ax_rate, ax_dist = axes[:3]
    fig.subplots_adjust(left=0.055 * (0.75 if goals else 1.0), right=0.95 if goals else 0.99, bottom=0.15,
                        top=0.9, wspace=0.3)
    if goals:
        _plot_goals(axes[3], goals)
    panels = (
        (ax_elbo, "negative ELBO", "train_loss", "train loss", "heldout_neg_elbo"),
        (ax_rate, "rate: KL(q(z|x) || p(z))", "train_kl", "train", "heldout_kl"),
        (ax_dist, "distortion: -log p(x|z)", "train_nll", "train", "heldout_nll"),
    )
    marker = "o" if len(history) <= 30 else None
    for ax, title, train_key, train_label, held_key in panels:
        if has(train_key):
            ax.plot(epoch, column(train_key), marker=marker, markersize=3, color=TRAIN_COLOUR, label=train_label)
        ax.plot(epoch, column(held_key), marker=marker, markersize=3, color=HELDOUT_COLOUR, label="held-out")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
