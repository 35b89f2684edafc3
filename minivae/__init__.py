"""minivae: the variational autoencoder (Kingma & Welling 2013) with every gradient derived and written by hand,
on NumPy (CPU) and CuPy (GPU). Derivations: derivations/README.md.
"""
from .backend import Device, DeviceError, array_namespace, from_host, get_device, to_host
from .gradcheck import check_backward, directional_check, numerical_gradient, rel_error
from .kl import kl_std_normal_backward, kl_std_normal_forward
from .layers import (identity_backward, identity_forward, linear_backward, linear_forward, relu_backward,
                     relu_forward, sigmoid_backward, sigmoid_forward, softplus_backward, softplus_forward,
                     tanh_backward, tanh_forward)
from .likelihoods import (bernoulli_nll_backward, bernoulli_nll_forward, categorical_nll_backward,
                          categorical_nll_forward, gaussian_nll_backward, gaussian_nll_forward, level_onehot,
                          variance_floor_backward, variance_floor_forward)
from .model import VAE
from .objectives import ELBO, IWBound
from .optim import SGD, Adam
from .reparam import logvar_clamp_backward, logvar_clamp_forward, reparameterize_backward, reparameterize_forward
from .rng import RNG
from .checkpoint import load_model
from .train import fit

__version__ = "0.1.0"

__all__ = [
    # the model, its objectives and optimizers, training
    "VAE", "ELBO", "IWBound", "Adam", "SGD", "RNG", "fit", "load_model",
    # devices
    "Device", "DeviceError", "array_namespace", "get_device", "from_host", "to_host",
    # gradient checks
    "check_backward", "directional_check", "numerical_gradient", "rel_error",
    # the pure forward/backward pairs
    "kl_std_normal_backward", "kl_std_normal_forward", "identity_backward", "identity_forward", "linear_backward",
    "linear_forward", "relu_backward", "relu_forward", "sigmoid_backward", "sigmoid_forward", "softplus_backward",
    "softplus_forward", "tanh_backward", "tanh_forward", "bernoulli_nll_backward", "bernoulli_nll_forward",
    "categorical_nll_backward", "categorical_nll_forward", "gaussian_nll_backward", "gaussian_nll_forward",
    "level_onehot", "variance_floor_backward", "variance_floor_forward", "logvar_clamp_backward",
    "logvar_clamp_forward", "reparameterize_backward", "reparameterize_forward",
]
