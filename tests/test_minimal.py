"""Tests for minivae/minimal.py: the one-screen default model equals VAE.loss_and_grads, loss and every gradient,
to rounding (float64), so the gradient checks of the model cover it too; and it is checked by finite
differences itself."""
import numpy as np
import pytest

from minivae import minimal
from minivae.backend import to_host
from minivae.gradcheck import numerical_gradient, rel_error
from minivae.model import VAE
from minivae.train import TrainConfig


def default_model(seed, x_dim=64, hidden=(400,)):
    c = TrainConfig()                                     # what `minivae train` builds with no options
    model = VAE(x_dim, c.z_dim, hidden=hidden, activation=c.activation, likelihood=c.likelihood, prior=c.prior,
                dtype="float64", seed=seed)
    r = np.random.default_rng(seed)
    for p in model.params.values():                       # biases off 0, a q unlike the init
        p += 0.1 * r.standard_normal(tuple(p.shape))
    x = (r.uniform(size=(7, x_dim)) < 0.4).astype(float)
    eps = r.standard_normal((7, c.z_dim))
    return model, x, eps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimal_equals_loss_and_grads_of_the_default_model(seed):
    model, x, eps = default_model(seed)
    loss, grads, _ = model.loss_and_grads(x, eps)
    m_loss, m_grads = minimal.loss_and_grads({k: to_host(v) for k, v in model.params.items()}, x, eps)
    assert set(m_grads) == set(grads)
    assert m_loss == pytest.approx(float(loss), rel=1e-13)
    for name in grads:
        np.testing.assert_allclose(m_grads[name], grads[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_minimal_equals_the_model_beyond_the_clamp():
    """A raw log-variance above LOGVAR_MAX: both read the clamped value, both give its head no gradient there."""
    model, x, eps = default_model(3, x_dim=6, hidden=(5,))
    model.params["enc.logvar.b"][0] = 60.0
    loss, grads, _ = model.loss_and_grads(x, eps)
    m_loss, m_grads = minimal.loss_and_grads(model.params, x, eps)
    assert m_loss == pytest.approx(float(loss), rel=1e-13)
    assert m_grads["enc.logvar.b"][0] == 0.0
    for name in grads:
        np.testing.assert_allclose(m_grads[name], grads[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_minimal_gradcheck():
    model, x, eps = default_model(4, x_dim=6, hidden=(5,))
    p = model.params
    _, grads = minimal.loss_and_grads(p, x, eps)
    for name, value in p.items():
        num = numerical_gradient(lambda: minimal.loss_and_grads(p, x, eps)[0], value, np.array(1.0))
        assert rel_error(grads[name], num) <= 1e-6, name


def test_minimal_fits_on_a_screen():
    """The short path is short: the function, comments included, in at most 45 lines."""
    import inspect
    assert len(inspect.getsource(minimal.loss_and_grads).splitlines()) <= 45
