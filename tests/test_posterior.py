"""Tests for minivae/posterior.py, plots.py: plot_posterior and ``minivae posterior``: the true posterior p(z|x) on
its grid against the closed form of a linear Gaussian model, its mass against 1, the gap log p(x) - ELBO against
KL(q(z|x) || p(z|x)) summed on an independent grid (and, for the linear model, against the closed-form KL), and the
picture read back as pixels."""
import shutil

import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from minivae.cli import main
from minivae.plots import POSTERIOR_COLOUR, POSTERIOR_PANEL, plot_posterior
from minivae.posterior import posterior_grid
from minivae.train import train

from test_evaluate import data, linear_gaussian_model, mog_model, small_model


def test_density_is_the_closed_form_posterior_of_a_linear_gaussian_model():
    """x = z W + b + noise of variance s^2: p(z|x) = N(m, S), S = (I + W W^T / s^2)^-1, m = S W (x - b) / s^2."""
    model = linear_gaussian_model()
    x = model.device.asarray(np.random.default_rng(2).standard_normal((3, 5)))
    W, b = model.params["dec.out.W"], model.params["dec.out.b"]
    var = model.config["sigma_min"] ** 2 + float(np.exp(model.params["dec.logvar"]))
    S = np.linalg.inv(np.eye(2) + W @ W.T / var)
    mu, logvar = model.encode(x)
    for n, r in enumerate(posterior_grid(model, x)):
        m = S @ W @ (x[n] - b) / var
        z1, z2 = np.meshgrid(*r["axes"], indexing="ij")
        truth = scipy.stats.multivariate_normal(m, S).pdf(np.stack([z1, z2], axis=-1))
        np.testing.assert_allclose(r["density"], truth, rtol=1e-6, atol=1e-9 * truth.max())
        assert r["mass"] == pytest.approx(1.0, abs=1e-6)
        kl = 0.5 * (np.trace(np.linalg.solve(S, np.diag(np.exp(logvar[n])))) + (m - mu[n]) @ np.linalg.solve(
            S, m - mu[n]) - 2 + np.linalg.slogdet(S)[1] - np.sum(logvar[n]))
        assert r["gap"] == pytest.approx(kl, rel=1e-6)
        assert r["grid_kl"] == pytest.approx(kl, rel=1e-6)


@pytest.mark.parametrize("make", [
    lambda: small_model(z_dim=2), lambda: small_model(z_dim=1), lambda: mog_model(z_dim=2),
    lambda: mog_model(z_dim=1), lambda: small_model(z_dim=2, likelihood="gaussian"),
], ids=["bernoulli-z2", "bernoulli-z1", "mog-z2", "mog-z1", "gaussian-z2"])
def test_density_integrates_to_one_and_the_gap_is_the_kl_on_the_grid(make):
    """A nonlinear decoder: no closed form, but two independent grids (exact_log_px's, adaptive over the whole
    box; the picture's, zoomed on the mass) must agree: p(z|x) = p(x, z) / p(x) integrates to 1 on the second,
    and the explicit KL(q || p(z|x)) on it equals log p(x) - ELBO from the first."""
    model = make()
    x = data(model, n=3)
    for r in posterior_grid(model, x):
        assert r["mass"] == pytest.approx(1.0, abs=1e-6)
        assert r["q_mass"] == pytest.approx(1.0, abs=1e-6)
        assert r["gap"] > 0
        assert r["grid_kl"] == pytest.approx(r["gap"], rel=1e-5, abs=1e-7)


def test_a_window_that_misses_the_posterior_is_seen_in_the_mass(monkeypatch):
    """The mass check can fail: a window that keeps only the top of p(z|x) loses mass."""
    import minivae.posterior as posterior
    monkeypatch.setattr(posterior, "TAIL", 0.5)
    monkeypatch.setattr(posterior, "Q_RADIUS", 0.5)
    model = small_model(z_dim=2)
    r = posterior_grid(model, data(model, n=1))[0]
    assert r["mass"] < 0.9


def test_needs_z_dim_1_or_2_and_enough_points():
    model = small_model(z_dim=3)
    with pytest.raises(ValueError, match="z_dim 1 or 2"):
        posterior_grid(model, data(model, n=1))
    model = small_model(z_dim=2)
    with pytest.raises(ValueError, match="points"):
        posterior_grid(model, data(model, n=1), points=2)


def read_rgb(path, width_in, height_in):
    img = matplotlib.image.imread(path)
    assert img.shape == (round(height_in * 100), round(width_in * 100), 4)
    return img[..., :3]


def red_pixels(rgb):
    """Pixels of the colour q(z|x) is drawn in (anti-aliasing aside)."""
    want = np.array(matplotlib.colors.to_rgb(POSTERIOR_COLOUR))
    return np.all(np.abs(rgb - want) < 0.06, axis=-1)


@pytest.mark.parametrize("z_dim", [1, 2])
def test_picture_has_one_panel_per_example_with_p_and_q_drawn(z_dim, tmp_path):
    model = small_model(z_dim=z_dim)
    results = posterior_grid(model, data(model, n=2), points=101)
    images = np.random.default_rng(0).uniform(size=(2, 2, 5))
    path = plot_posterior(results, str(tmp_path / "p.png"), images=images)
    width, height = POSTERIOR_PANEL
    rgb = read_rgb(path, 2 * width, height)
    for i in range(2):                                  # each panel: q in red, p(z|x) in blue
        panel = rgb[:, i * 350:(i + 1) * 350]
        assert red_pixels(panel).sum() > 100
        blue = (panel[..., 2] > panel[..., 0] + 0.3)
        assert blue.sum() > 500


def test_the_ellipse_sits_on_q(tmp_path):
    """Where the 1 sd ellipse is drawn: its red pixels' centre is mu, mapped to pixels by the panel's view."""
    from minivae.plots import _view
    model = small_model(z_dim=2)
    r = posterior_grid(model, data(model, n=1), points=101)[0]
    width, height = POSTERIOR_PANEL
    rgb = read_rgb(plot_posterior([r], str(tmp_path / "p.png")), width, height)
    box = (width - 0.85, height - 1.5)
    (x0, x1), (y0, y1) = _view(r, box[1] / box[0])
    left, bottom = 60, round(height * 100) - 50 - round(box[1] * 100)   # the panel's pixel origin (top-left)
    col = left + (r["mu"][0] - x0) / (x1 - x0) * box[0] * 100
    row = bottom + (y1 - r["mu"][1]) / (y1 - y0) * box[1] * 100
    rows, cols = np.nonzero(red_pixels(rgb))
    assert abs(np.mean(cols) - col) < 4 and abs(np.mean(rows) - row) < 4


def test_plot_posterior_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="results"):
        plot_posterior([], str(tmp_path / "p.png"))
    model = small_model(z_dim=2)
    results = posterior_grid(model, data(model, n=1), points=11)
    with pytest.raises(ValueError, match="one entry per result"):
        plot_posterior(results, str(tmp_path / "p.png"), images=np.zeros((2, 2, 5)))


@pytest.fixture(scope="module")
def run_z2(tmp_path_factory):
    out = tmp_path_factory.mktemp("run_z2")
    train(epochs=2, hidden=(16,), z_dim=2, out=str(out), log=lambda s: None)
    return out


def test_cli_prints_the_numbers_and_draws_the_picture(run_z2, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.npz"
    shutil.copy(run_z2 / "checkpoint.npz", ckpt)
    assert main(["posterior", str(ckpt), "--n", "2", "--points", "101"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(tmp_path / "posterior.png")
    rows = [line.split() for line in lines[1:-1]]
    assert [r[0] for r in rows] == ["0", "1"]
    for _, log_px, elbo, gap, grid_kl, mass in rows:
        assert float(gap) == pytest.approx(float(log_px) - float(elbo), abs=2e-4)    # printed to 4 decimals
        assert float(gap) > 0 and float(grid_kl) == pytest.approx(float(gap), abs=2e-5)
        assert float(mass) == pytest.approx(1.0, abs=2e-7)
    width, height = POSTERIOR_PANEL
    read_rgb(tmp_path / "posterior.png", 2 * width, height)


@pytest.mark.parametrize("argv, needle", [
    (["posterior", "{ckpt}", "--n", "0"], "--n must be"),
    (["posterior", "{ckpt}", "--n", "100000"], "held-out examples"),
    (["posterior", "{ckpt}", "--out", "{tmp}/p.jpg"], ".png"),
    (["posterior", "{ckpt}", "--points", "2"], "points"),
])
def test_cli_bad_input_one_line(run_z2, tmp_path, capsys, argv, needle):
    argv = [a.format(ckpt=run_z2 / "checkpoint.npz", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_cli_needs_z_dim_1_or_2(tmp_path, capsys):
    train(epochs=1, hidden=(8,), z_dim=3, out=str(tmp_path), log=lambda s: None)
    assert main(["posterior", str(tmp_path / "checkpoint.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "z_dim 3" in err[0] and "--z-dim 2" in err[0]
    assert not (tmp_path / "posterior.png").exists()
