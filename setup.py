from setuptools import find_packages, setup

setup(
    name="minivae",
    version="0.1.0",
    description="The variational autoencoder with every gradient derived and written by hand, "
                "on NumPy (CPU) and CuPy (GPU)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["minivae", "minivae.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=2.0",
        "scipy>=1.11",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",      # only for the handwritten digits it ships
        "tqdm>=4.60",             # progress bars of long evaluations
        "threadpoolctl>=3",       # one BLAS thread per row block of the NumPy step (minivae/kernels.py)
    ],
    extras_require={
        # CuPy wheels are built per CUDA major version: pick the one for your driver, e.g.
        # cupy-cuda12x (CUDA 12.x) or cupy-cuda13x (CUDA 13.x). See the README.
        "gpu": ["cupy-cuda12x>=13"],
        "test": ["pytest>=7", "array-api-strict>=2.3", "hypothesis>=6.100",
                 "pytest-xdist>=3",          # -n auto: the tests on every core
                 "ruff>=0.5"],               # the linter .ci/run runs first (.ruff.toml)
        # benchmarks/: pins the BLAS and OpenMP thread pools (PyTorch, the optional comparison, is not a
        # dependency of anything here: install it yourself to include it)
        "bench": ["threadpoolctl>=3"],
    },
    entry_points={"console_scripts": ["minivae = minivae.cli:main"]},
)
