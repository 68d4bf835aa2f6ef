"""Fixtures: every test that takes `family` runs for NumPy and, when PyTorch is importable,
for PyTorch CPU tensors (skipped otherwise)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import mla_ref  # noqa: E402

HAVE_TORCH = mla_ref.torch_or_none() is not None


@pytest.fixture(params=["numpy", "torch"])
def family(request):
    if request.param == "torch" and not HAVE_TORCH:
        pytest.skip("PyTorch is not installed")
    return request.param


@pytest.fixture
def rng(request):
    # A per-test seed, stable across runs.
    return np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)))
