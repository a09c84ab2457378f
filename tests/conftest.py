"""Shared fixtures: real photographs from scikit-image, quiet TensorFlow."""

import os
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converted pretrained weights go to a per-run folder, never the user's ~/.cache.
os.environ.setdefault("REAL_ESRGAN_TF_CACHE", tempfile.mkdtemp(prefix="real-esrgan-tf-test-cache-"))

# The Linux torch wheel's triton segfaults when it is imported after TensorFlow (both bundle LLVM), and
# torchvision imports it through torch._dynamo: torch treats a None entry as "no triton" and runs on
# the CPU without it. Set here, before any test module imports torch, TensorFlow or the upstream code.
sys.modules.setdefault("triton", None)


@pytest.fixture(scope="session")
def photos():
    """A few real photographs (uint8 RGB) from scikit-image's bundled data."""
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
