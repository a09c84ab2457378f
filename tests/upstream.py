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
