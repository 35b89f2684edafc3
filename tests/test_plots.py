"""Tests for minivae/plots.py and the picture commands of minivae/cli.py.

Every picture is rendered headless (Agg) from a tiny model trained two epochs, then read back with
matplotlib.image.imread: its size in pixels is the layout's size in inches times DPI (plots' module docstring),
and its panels are not blank. The math helpers are checked against closed forms (slerp's arc, the prior's
quantiles) and the sampler against Monte Carlo."""
import math
import os
import shutil
import sys

import matplotlib.image
import numpy as np
import pytest
from scipy.special import expit
from scipy.special import softmax as scipy_softmax
from scipy.stats import norm

from minivae import plots
from minivae.backend import get_device, to_host
from minivae.cli import main
from minivae.data import load_digits
from minivae.model import VAE
from minivae.rng import RNG
from minivae.train import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI, TILE, MARGIN, TITLE, LABEL, AXIS = (plots.DPI, plots.TILE, plots.MARGIN, plots.TITLE, plots.LABEL,
                                         plots.AXIS)


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    """A 64-16-(2)-16-64 VAE trained two epochs on the digits: (TrainResult, out folder)."""
    out = tmp_path_factory.mktemp("run2")
    return train(epochs=2, hidden=(16,), z_dim=2, out=str(out), log=lambda s: None), out


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def px(inches):
    """Inches -> pixels at DPI; the layout keeps every length a multiple of 1/4 inch, so this is exact."""
    assert (inches * DPI) == int(inches * DPI)
    return int(inches * DPI)


def read_png(path, width_in, height_in):
    """Assert ``path`` is a non-trivial PNG of width_in x height_in inches at DPI that is not blank; return its
    RGB pixels (H, W, 3) in [0, 1]."""
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC
    assert os.path.getsize(path) > 2000
    img = matplotlib.image.imread(path)
    assert img.shape == (px(height_in), px(width_in), 4)
    rgb = img[..., :3]
    assert np.var(rgb) > 0
    assert np.any(rgb != rgb[0, 0])                                 # more than one colour
    return rgb


def region(rgb, left_in, top_in, width_in, height_in):
    """The pixels of a rectangle given in inches from the top-left corner."""
    return rgb[px(top_in):px(top_in + height_in), px(left_in):px(left_in + width_in)]


def colours(pixels):
    """The distinct 8-bit (r, g, b) colours of ``pixels``, one row each (packed into one integer to sort fast)."""
    rgb = np.round(pixels.reshape(-1, 3) * 255).astype(np.int64)
    packed = np.unique((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])
    return np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], axis=1)


def assert_panel_drawn(pixels, at_least=20):
    """A panel of decoded images: not uniform, many grey levels."""
    assert np.std(pixels) > 0.05
    assert len(colours(pixels)) >= at_least


def spy_decode(model, monkeypatch):
    """Record every z (host copy) whose decoder mean the model computes (the pictures' images)."""
    seen, decoder_mean = [], model.decoder_mean

    def recording(z):
        seen.append(to_host(z))
        return decoder_mean(z)
    monkeypatch.setattr(model, "decoder_mean", recording)
    return seen


# ---- samples -----------------------------------------------------------------------------------------------

def test_samples_grid_size_and_panel(run2, tmp_path):
    result, _ = run2
    path = plots.plot_samples(result.model, (8, 8), str(tmp_path / "s.png"), n=16)
    assert path == str(tmp_path / "s.png")
    # one panel of 4 x 4 tiles: MARGIN | 4 TILE | MARGIN wide, TITLE above 4 TILE above MARGIN high
    rgb = read_png(tmp_path / "s.png", MARGIN + 4 * TILE + MARGIN, TITLE + 4 * TILE + MARGIN)
    assert_panel_drawn(region(rgb, MARGIN, TITLE, 4 * TILE, 4 * TILE))


def test_samples_from_likelihood_are_binary_pixels(run2, tmp_path):
    result, _ = run2
    plots.plot_samples(result.model, (8, 8), tmp_path / "s.png", n=10, seed=3, from_likelihood=True)
    # 10 samples -> 4 columns, 3 rows; two panels side by side
    rgb = read_png(tmp_path / "s.png", MARGIN + 2 * (4 * TILE + MARGIN), TITLE + 3 * TILE + MARGIN)
    assert_panel_drawn(region(rgb, MARGIN, TITLE, 4 * TILE, 3 * TILE))
    draws = colours(region(rgb, MARGIN + 4 * TILE + MARGIN, TITLE, 4 * TILE, 3 * TILE))
    separator = np.array([int(plots.SEPARATOR[i:i + 2], 16) for i in (1, 3, 5)])
    # Bernoulli draws: black and white pixels, and the separator between (and in the two unused) tiles
    assert sorted(map(tuple, draws)) == sorted([(0, 0, 0), (255, 255, 255), tuple(separator)])


def test_samples_follow_the_seed(run2, tmp_path):
    m = run2[0].model
    a = matplotlib.image.imread(plots.plot_samples(m, (8, 8), tmp_path / "a.png", n=9, seed=1))
    b = matplotlib.image.imread(plots.plot_samples(m, (8, 8), tmp_path / "b.png", n=9, seed=1))
    c = matplotlib.image.imread(plots.plot_samples(m, (8, 8), tmp_path / "c.png", n=9, seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_samples_on_every_device_match_the_cpu(run2, tmp_path, device):
    from minivae.checkpoint import load_model
    _, out = run2
    cpu, _ = load_model(out / "checkpoint.npz", "cpu")
    other, _ = load_model(out / "checkpoint.npz", device)
    z = RNG(0).normal((5, 2), cpu.device, "float32")
    z_other = other.device.asarray(to_host(z), dtype="float32")
    np.testing.assert_allclose(plots.decoder_mean(other, z_other), plots.decoder_mean(cpu, z), atol=1e-5)
    plots.plot_samples(other, (8, 8), tmp_path / "s.png", n=4, from_likelihood=True)
    read_png(tmp_path / "s.png", MARGIN + 2 * (2 * TILE + MARGIN), TITLE + 2 * TILE + MARGIN)


def test_samples_of_a_mixture_prior_decode_draws_of_the_mixture(tmp_path, monkeypatch, device):
    """With prior "mog" the codes are model.sample_prior's draws from the mixture, from RNG(seed)."""
    model = VAE(64, 2, hidden=(8,), device=device, seed=0, prior="mog", prior_components=3)
    model.params["prior.mu"] = model.device.asarray(np.array([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]]),
                                                    dtype="float32")
    seen = spy_decode(model, monkeypatch)
    plots.plot_samples(model, (8, 8), tmp_path / "s.png", n=30, seed=4)
    np.testing.assert_array_equal(seen[0], to_host(model.sample_prior(30, RNG(4))))
    nearest = np.argmin(((seen[0][:, None, :] - to_host(model.params["prior.mu"])[None]) ** 2).sum(-1), axis=1)
    assert set(nearest) == {0, 1, 2}                    # every component is drawn from (pi = 1/3 each)


# ---- the decoder mean and draws from p(x|z) -----------------------------------------------------------------

def test_decoder_mean_is_sigmoid_of_logits_or_the_gaussian_mean():
    dev = get_device("cpu")
    z = RNG(0).normal((7, 3), dev, "float64")
    bern = VAE(64, 3, hidden=(8,), dtype="float64", seed=1)
    np.testing.assert_allclose(plots.decoder_mean(bern, z), expit(bern.decode(z)["logits"]), rtol=1e-12)
    gauss = VAE(64, 3, hidden=(8,), likelihood="gaussian", dtype="float64", seed=1)
    np.testing.assert_array_equal(plots.decoder_mean(gauss, z), gauss.decode(z)["mean"])


def test_bernoulli_draws_are_binary_with_the_decoder_mean_as_frequency():
    model = VAE(64, 2, hidden=(8,), dtype="float64", seed=2)
    z = model.device.asarray(np.tile([[0.3, -1.2]], (20000, 1)), dtype="float64")     # one z, many draws
    x = plots.sample_likelihood(model, z, RNG(5))
    p = plots.decoder_mean(model, z[:1, :])[0]                                         # (64,)
    assert set(np.unique(x)) <= {0.0, 1.0}
    se = np.sqrt(p * (1 - p) / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - p) < 5 * se + 1e-12)


def test_gaussian_draws_have_std_exp_half_logvar():
    model = VAE(64, 2, hidden=(8,), likelihood="gaussian", dtype="float64", seed=2)
    model.params["dec.logvar"] = model.device.asarray(math.log(0.25), dtype="float64")  # std 0.5, variance 0.25
    z = model.device.asarray(np.tile([[1.0, 0.5]], (5000, 1)), dtype="float64")
    noise = plots.sample_likelihood(model, z, RNG(6)) - plots.decoder_mean(model, z)
    n = noise.size
    assert abs(np.mean(noise)) < 5 * 0.5 / np.sqrt(n)
    # the sample std of 320,000 N(0, 0.25) draws is 0.5 within ~0.0006; 0.25 (variance used as std) is far off
    assert np.std(noise) == pytest.approx(0.5, abs=0.003)


def test_per_element_gaussian_draws_have_each_elements_std():
    """gaussian_variance per-element: each pixel's draws have the std exp(logvar_d / 2) its decoder head gives."""
    model = VAE(64, 2, hidden=(8,), likelihood="gaussian", gaussian_variance="per-element", dtype="float64", seed=2)
    z = model.device.asarray(np.tile([[1.0, 0.5]], (4000, 1)), dtype="float64")
    std = np.exp(to_host(model.decode(z[:1, :])["logvar"])[0] / 2)                  # (64,), not all equal
    assert std.max() / std.min() > 1.5
    noise = plots.sample_likelihood(model, z, RNG(6)) - plots.decoder_mean(model, z)   # (4000, 64)
    # the sample std of n normal draws has relative standard error 1 / sqrt(2 (n - 1)): 0.011 for n = 4000
    np.testing.assert_allclose(np.std(noise, axis=0) / std, 1.0, atol=5 / np.sqrt(2 * 3999))


def test_categorical_mean_is_the_expected_level_and_draws_follow_the_softmax():
    model = VAE(64, 2, hidden=(8,), likelihood="categorical", levels=4, dtype="float64", seed=2)
    for p in model.params.values():
        p += 0.5 * np.random.default_rng(0).standard_normal(p.shape)
    z = model.device.asarray(np.tile([[0.3, -1.2]], (20000, 1)), dtype="float64")   # one z, many draws
    probs = scipy_softmax(model.decode(z[:1, :])["logits"][0], axis=1)             # (64, 4)
    np.testing.assert_allclose(plots.decoder_mean(model, z[:1, :])[0], probs @ np.arange(4) / 3, rtol=1e-12)
    x = plots.sample_likelihood(model, z, RNG(5))                                    # (20000, 64) in {0, 1/3, 2/3, 1}
    assert set(np.unique(x)) <= {0.0, 1 / 3, 2 / 3, 1.0}
    freq = np.stack([np.mean(np.isclose(x, k / 3), axis=0) for k in range(4)], axis=1)   # (64, 4)
    se = np.sqrt(probs * (1 - probs) / x.shape[0])
    assert np.all(np.abs(freq - probs) < 5 * se + 1e-12)


# ---- reconstructions -------------------------------------------------------------------------------------------

def test_reconstructions_size_and_rows(run2, digits, tmp_path, monkeypatch):
    m = run2[0].model
    seen = spy_decode(m, monkeypatch)
    plots.plot_reconstructions(m, digits.x_test, (8, 8), tmp_path / "r.png", n=12, sampled=True, per_row=6)
    # two stacked blocks of 6 examples x 3 rows (input, mean at mu, mean at a sampled z), labels on the left
    block = TITLE + 3 * TILE
    rgb = read_png(tmp_path / "r.png", LABEL + 6 * TILE + MARGIN, 2 * block + MARGIN)
    for b in range(2):
        for row in range(3):
            assert_panel_drawn(region(rgb, LABEL, b * block + TITLE + row * TILE, 6 * TILE, TILE), 10)
    assert np.std(region(rgb, 0, 0, LABEL, 2 * block)) > 0          # the row labels are drawn
    # the first decode is at z = mu of the first 12 held-out inputs; the second at a z ~ q(z|x) near it
    x12 = m.device.asarray(digits.x_test[:12], dtype=m.dtype_name)
    mu, logvar = (to_host(a) for a in m.encode(x12))
    np.testing.assert_array_equal(seen[0], mu)
    eps = to_host(RNG(0).normal((12, 2), m.device, "float32"))
    np.testing.assert_allclose(seen[1], mu + np.exp(logvar / 2) * eps, rtol=1e-5, atol=1e-6)


def test_reconstructions_without_sampled_rows(run2, digits, tmp_path):
    plots.plot_reconstructions(run2[0].model, digits.x_test, (8, 8), tmp_path / "r.png", n=3)
    read_png(tmp_path / "r.png", LABEL + 3 * TILE + MARGIN, TITLE + 2 * TILE + MARGIN)


# ---- interpolation -------------------------------------------------------------------------------------------

def test_interpolation_both_kinds_size_and_endpoints(run2, digits, tmp_path, monkeypatch):
    m = run2[0].model
    seen = spy_decode(m, monkeypatch)
    plots.plot_interpolations(m, digits.x_test, (8, 8), tmp_path / "i.png", pairs=3, steps=6, kind="both",
                              seed=4)
    panel = TITLE + 3 * TILE                                          # 3 pairs, one row each
    rgb = read_png(tmp_path / "i.png", MARGIN + 6 * TILE + MARGIN, 2 * panel + MARGIN)
    for p in range(2):
        assert_panel_drawn(region(rgb, MARGIN, p * panel + TITLE, 6 * TILE, 3 * TILE))
    idx = RNG(4).permutation(digits.x_test.shape[0])[:6]
    mu = plots.encode_means(m, digits.x_test[idx])                    # (6, 2): pair i is rows 2i, 2i+1
    linear, spherical = (z.reshape(3, 6, 2) for z in seen)
    for zs in (linear, spherical):
        np.testing.assert_allclose(zs[:, 0], mu[0::2], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(zs[:, -1], mu[1::2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(linear[:, 1:] - linear[:, :-1], np.repeat((mu[1::2] - mu[0::2])[:, None] / 5, 5,
                               axis=1), rtol=1e-5, atol=1e-6)


def test_interpolation_one_kind_is_one_panel(run2, digits, tmp_path):
    plots.plot_interpolations(run2[0].model, digits.x_test, (8, 8), tmp_path / "i.png", pairs=2, steps=4,
                              kind="slerp")
    read_png(tmp_path / "i.png", MARGIN + 4 * TILE + MARGIN, TITLE + 2 * TILE + MARGIN)


def test_slerp_endpoints_and_norm_for_equal_norm_endpoints():
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal(8), rng.standard_normal(8)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)                  # equal norms r
    r = np.linalg.norm(z0)
    t = np.linspace(0.0, 1.0, 11)
    path = plots.slerp(z0, z1, t)
    np.testing.assert_allclose(path[0], z0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(path[-1], z1, rtol=1e-12, atol=1e-12)
    norms = np.linalg.norm(path, axis=1)
    assert np.all(norms >= r - 1e-12) and np.all(norms <= r + 1e-12)
    # the great-circle arc: the angle to z0 grows linearly in t, and the path stays in the plane of z0, z1
    omega = np.arccos(z0 @ z1 / r ** 2)
    np.testing.assert_allclose(np.arccos(np.clip(path @ z0 / (norms * r), -1, 1)), t * omega, atol=1e-7)
    basis, _ = np.linalg.qr(np.stack([z0, z1], axis=1))
    np.testing.assert_allclose(path - (path @ basis) @ basis.T, 0.0, atol=1e-12)


def test_slerp_keeps_to_the_prior_shell_where_linear_midpoints_fall_inside():
    z_dim = 64
    draws = np.random.default_rng(1).standard_normal((200, 2, z_dim))
    mid_lin = np.array([plots.lerp(a, b, [0.5])[0] for a, b in draws])
    mid_sph = np.array([plots.slerp(a, b, [0.5])[0] for a, b in draws])
    end_norm = np.linalg.norm(draws, axis=2).mean()
    assert end_norm == pytest.approx(math.sqrt(z_dim), rel=0.05)
    assert np.linalg.norm(mid_lin, axis=1).mean() == pytest.approx(math.sqrt(z_dim / 2), rel=0.05)
    assert np.linalg.norm(mid_sph, axis=1).mean() == pytest.approx(end_norm, rel=0.05)


def test_slerp_falls_back_to_linear_where_the_arc_is_undefined():
    z = np.array([1.0, 2.0])
    t = np.linspace(0, 1, 5)
    for z1 in (2 * z, -z, np.zeros(2)):                            # parallel, antipodal, zero
        np.testing.assert_allclose(plots.slerp(z, z1, t), plots.lerp(z, z1, t))


def test_interpolate_checks_its_arguments():
    assert plots.interpolate([0, 1], [1, 0], 2, "linear").shape == (2, 2)
    with pytest.raises(ValueError, match="steps"):
        plots.interpolate([0, 1], [1, 0], 1, "linear")
    with pytest.raises(ValueError, match="kind"):
        plots.interpolate([0, 1], [1, 0], 3, "cubic")


# ---- the 2-D latent space -----------------------------------------------------------------------------------------

def test_prior_quantile_grid_is_the_priors_quantiles():
    q = plots.prior_quantile_grid(15)
    np.testing.assert_allclose(q, norm.ppf((np.arange(15) + 0.5) / 15), rtol=1e-12)
    np.testing.assert_allclose(np.diff(norm.cdf(q)), 1 / 15, rtol=1e-9)           # equal prior mass apart
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)
    assert q[-1] == pytest.approx(1.8339, abs=1e-4)


def test_manifold_decodes_the_quantile_grid(run2, tmp_path, monkeypatch):
    m = run2[0].model
    seen = spy_decode(m, monkeypatch)
    plots.plot_latent_manifold(m, (8, 8), tmp_path / "m.png", n=5)
    rgb = read_png(tmp_path / "m.png", AXIS + 5 * TILE + MARGIN, TITLE + 5 * TILE + AXIS)
    assert_panel_drawn(region(rgb, AXIS, TITLE, 5 * TILE, 5 * TILE))
    q = norm.ppf((np.arange(5) + 0.5) / 5)
    z = seen[0].reshape(5, 5, 2)                                    # tile rows, tile columns
    np.testing.assert_allclose(z[..., 0], np.tile(q, (5, 1)), rtol=1e-6)               # z1 grows rightwards
    np.testing.assert_allclose(z[..., 1], np.tile(q[::-1, None], (1, 5)), rtol=1e-6)   # z2 grows upwards


def test_latent_scatter_with_and_without_labels(run2, digits, tmp_path):
    m = run2[0].model
    rgb = read_png(plots.plot_latent_scatter(m, digits.x_test, tmp_path / "a.png", labels=digits.y_test), 6, 5)
    assert len(colours(rgb)) > 50                                   # ten classes of coloured points
    read_png(plots.plot_latent_scatter(m, digits.x_test, tmp_path / "b.png"), 6, 5)
    many = np.arange(digits.x_test.shape[0]) % 20                   # more than 10 classes: a colorbar
    read_png(plots.plot_latent_scatter(m, digits.x_test, tmp_path / "c.png", labels=many), 6, 5)
    with pytest.raises(ValueError, match="labels"):
        plots.plot_latent_scatter(m, digits.x_test, tmp_path / "d.png", labels=digits.y_test[:5])


def test_latent_pictures_need_z_dim_2(digits, tmp_path):
    model = VAE(64, 8, hidden=(8,))
    for draw in (lambda: plots.plot_latent_manifold(model, (8, 8), tmp_path / "m.png"),
                 lambda: plots.plot_latent_scatter(model, digits.x_test, tmp_path / "s.png")):
        with pytest.raises(ValueError, match="z_dim 8"):
            draw()
    assert not list(tmp_path.iterdir())


# ---- image shapes and bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("image_shape, needle", [(None, "image shape"), ((7, 9), "x_dim"), ((8,), "height")])
def test_image_pictures_need_an_image_shape(run2, digits, tmp_path, image_shape, needle):
    m, x = run2[0].model, digits.x_test
    for draw in (lambda: plots.plot_samples(m, image_shape, tmp_path / "a.png"),
                 lambda: plots.plot_reconstructions(m, x, image_shape, tmp_path / "a.png"),
                 lambda: plots.plot_interpolations(m, x, image_shape, tmp_path / "a.png"),
                 lambda: plots.plot_latent_manifold(m, image_shape, tmp_path / "a.png")):
        with pytest.raises(ValueError, match=needle):
            draw()
    assert not list(tmp_path.iterdir())


def test_bad_counts_and_inputs(run2, digits, tmp_path):
    m = run2[0].model
    with pytest.raises(ValueError, match="n must be"):
        plots.plot_samples(m, (8, 8), tmp_path / "a.png", n=0)
    with pytest.raises(ValueError, match="fewer than the 400"):
        plots.plot_reconstructions(m, digits.x_test, (8, 8), tmp_path / "a.png", n=400)
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        plots.plot_reconstructions(m, digits.x_test[:, :10], (8, 8), tmp_path / "a.png")
    with pytest.raises(ValueError, match="kind"):
        plots.plot_interpolations(m, digits.x_test, (8, 8), tmp_path / "a.png", kind="cubic")


def test_unwritable_path_names_the_file_and_leaves_nothing(run2, tmp_path):
    folder = tmp_path / "taken.png"
    folder.mkdir()
    with pytest.raises(OSError, match="taken"):
        plots.plot_samples(run2[0].model, (8, 8), folder, n=4)
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["taken.png"]


@pytest.mark.parametrize("name", ["s.jpg", "s", "s.png.txt"])
def test_a_path_that_is_not_png_is_refused_and_nothing_written(run2, tmp_path, name):
    """PNG bytes written into s.jpg mislead every viewer: the picture commands refuse any other suffix."""
    with pytest.raises(ValueError, match=r"out .* must be a \.png file"):
        plots.plot_samples(run2[0].model, (8, 8), tmp_path / name, n=4)
    assert list(tmp_path.iterdir()) == []


# ---- loss curves ------------------------------------------------------------------------------------------------

def _hex_rgb(colour):
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255


def _count_colour(pixels, colour, tol=0.05):
    return int(np.sum(np.all(np.abs(pixels - _hex_rgb(colour)) < tol, axis=-1)))


def test_loss_curves_with_and_without_train_rate_and_distortion(run2, tmp_path):
    history = [{k: v for k, v in e.items() if k not in ("train_nll", "train_kl") + plots.GOAL_KEYS}
               for e in run2[0].history]
    rgb = read_png(plots.plot_loss_curves(history, tmp_path / "a.png"), 12, 3.5)
    rate_panel = rgb[:, px(4):px(8)]                                # the middle third
    assert _count_colour(rate_panel, plots.HELDOUT_COLOUR) > 20
    assert _count_colour(rate_panel, plots.TRAIN_COLOUR) == 0       # no training curve to draw
    assert _count_colour(rgb[:, :px(4)], plots.TRAIN_COLOUR) > 20   # the training loss is always drawn
    full = [dict(e, train_nll=e["heldout_nll"] + 1.0, train_kl=e["heldout_kl"] - 0.5) for e in history]
    rgb = read_png(plots.plot_loss_curves(full, tmp_path / "b.png"), 12, 3.5)
    for third in range(3):
        panel = rgb[:, px(4 * third):px(4 * third + 4)]
        assert _count_colour(panel, plots.TRAIN_COLOUR) > 20 and _count_colour(panel, plots.HELDOUT_COLOUR) > 20


def test_loss_curves_fourth_panel_draws_the_two_goals(run2, tmp_path):
    """A z_dim 2 run on the digits tracks the two goals (train --track-exact auto): a fourth panel, 4 inches
    wider, with log p(x), the ELBO, the gap on its right-hand axis and the epochs where the ELBO rose while
    log p(x) fell."""
    history = run2[0].history
    assert all(all(k in e for k in plots.GOAL_KEYS) for e in history)
    rising = [dict(e, heldout_exact_elbo=-30.0 + e["epoch"], heldout_log_px=-20.0 - e["epoch"]) for e in history]
    assert plots.goal_trades(rising) == [e["epoch"] for e in history[1:]]
    assert plots.goal_trades(history + [dict(history[-1], epoch=3, heldout_exact_elbo=-1.0,
                                             heldout_log_px=history[-1]["heldout_log_px"] + 1.0)]) == []
    rgb = read_png(plots.plot_loss_curves(rising, tmp_path / "a.png"), 16, 3.5)
    goals = rgb[:, px(12):]                                         # the fourth quarter
    for colour in (plots.LOG_PX_COLOUR, plots.GAP_COLOUR, plots.HELDOUT_COLOUR, plots.TRADE_COLOUR):
        assert _count_colour(goals, colour) > 20, colour
    assert _count_colour(rgb[:, :px(12)], plots.GAP_COLOUR) == 0
    falling = [dict(e, heldout_exact_elbo=-30.0 - e["epoch"]) for e in rising]    # no ELBO rise: no marks
    rgb = read_png(plots.plot_loss_curves(falling, tmp_path / "b.png"), 16, 3.5)
    assert _count_colour(rgb[:, px(12):], plots.TRADE_COLOUR) == 0


def test_loss_curves_reject_bad_histories(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        plots.plot_loss_curves([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="heldout_kl"):
        plots.plot_loss_curves([{"epoch": 1, "train_loss": 3.0, "heldout_neg_elbo": 2.0, "heldout_nll": 1.0}],
                               tmp_path / "a.png")
    assert not list(tmp_path.iterdir())


# ---- headless ---------------------------------------------------------------------------------------------------

def test_drawing_never_imports_pyplot(run2, tmp_path):
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("another test imported pyplot already")
    plots.plot_samples(run2[0].model, (8, 8), tmp_path / "s.png", n=4)
    plots.plot_loss_curves(run2[0].history, tmp_path / "l.png")
    assert "matplotlib.pyplot" not in sys.modules


# ---- the command line ---------------------------------------------------------------------------------------------

def test_cli_pictures_end_to_end(run2, tmp_path, capsys):
    _, out = run2
    ckpt = tmp_path / "checkpoint.npz"
    shutil.copy(out / "checkpoint.npz", ckpt)
    cases = [
        (["sample", str(ckpt), "--n", "9", "--from-likelihood", "--out", str(tmp_path / "s.png")],
         [tmp_path / "s.png"], (MARGIN + 2 * (3 * TILE + MARGIN), TITLE + 3 * TILE + MARGIN)),
        (["reconstruct", str(ckpt), "--n", "4"], [tmp_path / "reconstructions.png"],
         (LABEL + 4 * TILE + MARGIN, TITLE + 2 * TILE + MARGIN)),
        (["interpolate", str(ckpt), "--pairs", "2", "--steps", "5", "--kind", "linear"],
         [tmp_path / "interpolations.png"], (MARGIN + 5 * TILE + MARGIN, TITLE + 2 * TILE + MARGIN)),
        (["latent", str(ckpt), "--n", "4"], [tmp_path / "manifold.png", tmp_path / "latent_scatter.png"], None),
    ]
    for argv, files, size in cases:
        assert main(argv) == 0
        assert capsys.readouterr().out.split() == [str(f) for f in files]
        if size:
            read_png(files[0], *size)
    read_png(tmp_path / "manifold.png", AXIS + 4 * TILE + MARGIN, TITLE + 4 * TILE + AXIS)
    read_png(tmp_path / "latent_scatter.png", 6, 5)
    assert main(["sample", str(ckpt)]) == 0                              # the default: 64 samples, 8 x 8
    read_png(tmp_path / "samples.png", MARGIN + 8 * TILE + MARGIN, TITLE + 8 * TILE + MARGIN)


def test_cli_latent_needs_z_dim_2(tmp_path, capsys):
    train(epochs=1, hidden=(8,), z_dim=8, out=str(tmp_path), log=lambda s: None)
    assert main(["latent", str(tmp_path / "checkpoint.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "z_dim 8" in err[0] and "--z-dim 2" in err[0]
    assert not (tmp_path / "manifold.png").exists() and not (tmp_path / "latent_scatter.png").exists()


@pytest.mark.parametrize("argv, needle", [
    (["interpolate", "{ckpt}", "--kind", "cubic"], "kind"),
    (["sample", "{ckpt}", "--n", "0"], "n must be"),
    (["reconstruct", "{ckpt}", "--n", "1000"], "fewer than"),
    (["sample", "{ckpt}", "--out", "{tmp}/no/such/folder/s.png"], "cannot write"),
    (["sample", "{tmp}/missing.npz"], "missing.npz"),
])
def test_cli_bad_input_one_line(run2, tmp_path, capsys, argv, needle):
    ckpt = str(run2[1] / "checkpoint.npz")
    argv = [a.format(ckpt=ckpt, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
