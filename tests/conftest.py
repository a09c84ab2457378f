"""Shared fixtures: real photographs from scikit-image, quiet TensorFlow."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converted pretrained weights go to a per-run folder, never the user's ~/.cache.
os.environ.setdefault("REAL_ESRGAN_TF_CACHE", tempfile.mkdtemp(prefix="real-esrgan-tf-test-cache-"))

import numpy as np
import pytest


@pytest.fixture(scope="session")
def photos():
    """A few real photographs (uint8 RGB) from scikit-image's bundled data."""
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
