"""Tests for minivae/rng.py: one seed, independent streams (the weights' initialisation and the training loop
never share numbers), and state round trips."""
import numpy as np
import pytest

import minivae.model as model_module
from minivae.rng import RNG, STREAMS
from minivae.train import train


def test_streams_are_the_seed_sequence_children_and_differ_from_the_root():
    children = np.random.SeedSequence(5).spawn(len(STREAMS))
    for stream, child in zip(STREAMS, children, strict=True):
        expected = np.random.Generator(np.random.PCG64(child)).standard_normal(4)
        np.testing.assert_array_equal(RNG(5, stream=stream).host_normal(4), expected)
    draws = {s: RNG(5, stream=s).host_normal(1000) for s in (None,) + STREAMS}
    for a in draws:
        for b in draws:
            if a != b:
                assert abs(np.corrcoef(draws[a], draws[b])[0, 1]) < 5 / np.sqrt(1000), (a, b)


def test_state_round_trips_on_a_stream():
    rng = RNG(3, stream="train")
    rng.host_normal(7)
    saved = rng.state
    first = rng.host_normal(5)
    rng.set_state(saved)
    np.testing.assert_array_equal(rng.host_normal(5), first)


@pytest.mark.parametrize("stream", ["eval", 0, "INIT"])
def test_an_unknown_stream_is_refused_naming_it(stream):
    with pytest.raises(ValueError, match="stream must be None or one of init, train"):
        RNG(0, stream=stream)


def _runs(a, b, length=8, tol=1e-6):
    """The number of places where ``length`` consecutive values of b appear, in order, as values of a (each
    matched to within a relative ``tol``): a copied stretch of random numbers, not a coincidence."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    found = 0
    for j in range(0, len(b) - length, length):
        hits = np.flatnonzero(np.isclose(a, b[j], rtol=tol, atol=0))
        for i in hits:
            if i + length <= len(a) and np.allclose(a[i:i + length], b[j:j + length], rtol=tol, atol=0):
                found += 1
                break
    return found


def test_training_noise_is_not_a_copy_of_the_initial_weights(monkeypatch, tmp_path):
    """The first steps' noise eps must not repeat the draws that initialised the weights (with one generator per
    seed for both, the digits' epochs 1-4 replayed the weights' numbers as noise). Every initial weight is
    std * a standard normal draw, so W / std recovers the draws; the eps of the first 20 steps are compared
    with them, stretch by stretch."""
    seen = []
    real = model_module.VAE.loss_and_grads

    def record(self, x, eps, objective=None, check_input=True):
        if len(seen) < 20:
            seen.append(np.array(eps, dtype=np.float64).ravel())
        return real(self, x, eps, objective, check_input)
    monkeypatch.setattr(model_module.VAE, "loss_and_grads", record)
    result = train(epochs=1, hidden=(8,), z_dim=2, batch_size=64, out=str(tmp_path / "run"),
                   dtype="float64", log=lambda s: None)
    fresh = model_module.VAE(64, 2, hidden=(8,), dtype="float64", seed=0)      # the initial weights of seed 0
    draws = np.concatenate([np.asarray(fresh.params[k]).ravel() / (1.0 / np.sqrt(fresh.params[k].shape[0]))
                            for k in ("enc.0.W", "enc.mu.W", "enc.logvar.W", "dec.0.W", "dec.out.W")])
    noise = np.concatenate(seen)
    assert result.history and noise.size > 1000
    assert _runs(draws, noise) == 0
    # the check can fail: the same noise drawn from the weights' own stream is found at once
    copied = RNG(0, stream="init").host_normal(draws.size)
    assert _runs(draws, copied[:2000]) > 100
