"""Tests for minivae/evaluate.py: the held-out negative ELBO is the average of the per-example terms, is
reproducible, and does not depend on the evaluation batch size."""
import numpy as np
import pytest

from minivae.evaluate import evaluate_elbo
from minivae.model import VAE
from minivae.rng import RNG


def test_matches_per_example_terms_and_batching(device):
    model = VAE(10, 3, hidden=(6,), dtype="float64", device=device, seed=0)
    x = device.asarray(np.random.default_rng(1).uniform(size=(25, 10)))
    full = evaluate_elbo(model, x, seed=5, batch_size=1000)
    nll, kl = model.elbo_terms(x, RNG(5).normal((25, 3), device, "float64"))
    from minivae.backend import to_host
    assert full["nll"] == pytest.approx(float(np.mean(to_host(nll))), rel=1e-13)
    assert full["kl"] == pytest.approx(float(np.mean(to_host(kl))), rel=1e-13)
    assert full["neg_elbo"] == pytest.approx(full["nll"] + full["kl"], rel=1e-15)
    chunked = evaluate_elbo(model, x, seed=5, batch_size=7)     # same noise stream, drawn in chunks
    assert chunked == pytest.approx(full, rel=1e-13)
    assert evaluate_elbo(model, x, seed=5) == full


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_bad_batch_size(batch_size):
    model = VAE(4, 2, hidden=(), dtype="float64")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_elbo(model, np.zeros((3, 4)), batch_size=batch_size)
