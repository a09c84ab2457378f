"""The real upstream PyTorch packages (basicsr, facexlib, gfpgan, realesrgan) as test oracles.

They are installed with `--no-deps` (tests/oracle-requirements.txt; their declared dependencies would put
tb-nightly over TensorFlow's tensorboard) and run on torch/torchvision from the `test` extra. BasicSR 1.4.2
imports `torchvision.transforms.functional_tensor`, a module that torchvision 0.17 folded into
`torchvision.transforms.functional` (same functions): `import_upstream` points the old name at the new
module before importing, and changes nothing else. Import this module only in tests that need torch.
"""

from __future__ import annotations

import importlib
import sys
import types


def import_upstream(name: str) -> types.ModuleType:
    """`importlib.import_module(name)` for a module of basicsr/facexlib/gfpgan/realesrgan."""
    import torchvision.transforms.functional as functional

    sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
    return importlib.import_module(name)


def calibrate_batch_norms(net, x) -> None:
    """Random-weight oracles with batch norms: random affine parameters (weight U(0.5, 1.5), bias
    U(-0.2, 0.2)) and running statistics equal to those of the batch `x`, so a freshly initialised
    network keeps its activations in range on a real image. Leaves `net` in eval mode; the state is
    saved with the weights, so both sides of a comparison see the same network."""
    import torch

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # cumulative average: the running stats become this batch's
                module.reset_running_stats()
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        net.train()
        net(x)
        net.eval()
