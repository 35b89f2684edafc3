"""The masked affine layer of MADE (Germain et al. 2015, "MADE: Masked Autoencoder for Distribution
Estimation", Sec. 4) as a pure pair, and the masks that make a stack of them autoregressive.

    y = x (W * M),     M a constant 0/1 matrix of W's shape,

so the backward is the linear layer's with the mask on the weight gradient: dx = dy (W * M)^T, dW = (x^T dy) * M.
The masks come from degrees (``made_masks``): input d has degree d (1..D); each hidden unit a degree in
1..D-1; a hidden unit sees the units of the layer below with degree <= its own, an output d the last hidden
units with degree < d. Then output d depends on x_1 .. x_{d-1} only.
Derivation: derivations/made.md. Tests: tests/test_made.py, tests/test_ops.py.
"""
import itertools

import numpy as np

from .checks import check_arrays, check_shape


def masked_linear_forward(x, W, M):
    """y = x (W * M).   x: (N, A), W, M: (A, B) -> y: (N, B).  M is a constant (no gradient).

    cache = (x, W * M, M).  derivations/made.md#masked-linear
    """
    check_arrays("masked_linear_forward", x=x, W=W, M=M)
    check_shape("masked_linear_forward", "x", x, (None, None), "(N, A)")
    check_shape("masked_linear_forward", "W", W, (x.shape[1], None), "x's A rows")
    check_shape("masked_linear_forward", "M", M, tuple(W.shape), "W's shape")
    WM = W * M                                                       # (A, B)  masked weights
    return x @ WM, (x, WM, M)


def masked_linear_backward(dy, cache):
    """dx = dy (W * M)^T,  dW = (x^T dy) * M.   dy: (N, B) -> (dx (N, A), dW (A, B)).
    derivations/made.md#masked-linear"""
    x, WM, M = cache
    return dy @ WM.T, (x.T @ dy) * M


def made_degrees(x_dim, hidden):
    """The degrees (host int arrays): inputs 1..D, then each hidden layer's H units over 1..D-1, deterministic:
    cycling (unit k: k mod (D - 1) + 1) when H >= D - 1, so every degree is used; spread evenly (unit k:
    1 + floor(k (D - 1) / H)) when H is smaller, so every part of the image still has units that read it.
    derivations/made.md#masks"""
    top = max(x_dim - 1, 1)
    return [np.arange(1, x_dim + 1)] + [np.arange(h) % top + 1 if h >= top else 1 + np.arange(h) * top // h
                                        for h in hidden]


def made_masks(x_dim, hidden):
    """Host float64 0/1 masks, one per layer: hidden layer l: M[i, k] = [m_l(k) >= m_{l-1}(i)], (H_{l-1}, H_l);
    the output: M[k, d] = [d > m_L(k)], (H_L, D).  derivations/made.md#masks"""
    degrees = made_degrees(x_dim, hidden)
    masks = [(m_out[None, :] >= m_in[:, None]).astype(np.float64) for m_in, m_out in itertools.pairwise(degrees)]
    masks.append((np.arange(1, x_dim + 1)[None, :] > degrees[-1][:, None]).astype(np.float64))
    return masks


def check_autoregressive(masks):
    """True when the masks' connectivity has no path from input i to an output d <= i (host): reach[i, d], the
    product of the masks, is 0 on and below the diagonal.  derivations/made.md#masks"""
    reach = masks[0]
    for m in masks[1:]:
        reach = (reach @ m > 0).astype(np.float64)
    return bool(np.all(np.tril(reach) == 0))

