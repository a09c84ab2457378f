"""Shared fixtures: real photographs from scikit-image, quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
