"""Tests for minivae/schedule.py: the KL weight of each training step during and after a linear warm-up."""
import itertools
import pytest

from minivae.schedule import epoch_kl_weight, kl_weight


def test_kl_weight_rises_linearly_per_step():
    s, e, beta, b0 = 4, 3, 2.0, 0.5
    weights = [kl_weight(ep, st, s, beta, e, b0) for ep in range(5) for st in range(s)]
    assert weights[0] == b0
    steps = [b - a for a, b in itertools.pairwise(weights)]
    assert all(d == pytest.approx((beta - b0) / (e * s), rel=1e-12) for d in steps[:e * s - 1])
    assert weights[e * s] == beta and all(w == beta for w in weights[e * s:])       # from epoch e + 1 (1-based)
    assert weights[e * s - 1] < beta
    # a warm-up may also fall (start above beta)
    assert kl_weight(0, 0, 10, 1.0, 2, 3.0) == 3.0 and kl_weight(1, 0, 10, 1.0, 2, 3.0) == pytest.approx(2.0)


def test_no_warmup_is_beta():
    assert all(kl_weight(ep, st, 7, 0.3) == 0.3 for ep in range(3) for st in range(7))
    assert isinstance(kl_weight(0, 0, 7, 1), float)


def test_epoch_kl_weight_is_the_mean_of_its_steps():
    s, e, beta, b0 = 5, 4, 1.0, 0.0
    for ep in range(6):
        steps = [kl_weight(ep, st, s, beta, e, b0) for st in range(s)]
        assert epoch_kl_weight(ep, s, beta, e, b0) == pytest.approx(sum(steps) / s, rel=1e-14)
        if ep < e:                                              # the middle term of the arithmetic sequence
            assert epoch_kl_weight(ep, s, beta, e, b0) == pytest.approx(b0 + (beta - b0) * (ep * s + (s - 1) / 2)
                                                                        / (e * s), rel=1e-14)
    assert epoch_kl_weight(e, s, beta, e, b0) == beta
