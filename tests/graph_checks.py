"""Proof that accelerator code can run on a GPU, checked on a machine without one.

The full TensorFlow wheel registers its CUDA kernels even where no GPU exists, so we can walk a
traced graph (and every function it calls: while bodies, conds, nested tf.functions) and ask the
kernel registry whether each op type has a GPU kernel.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.framework import kernels

# Ops that are not kernels but graph plumbing, resolved by the runtime or placed on the host.
_PSEUDO_OPS = {"NoOp", "Placeholder", "_Arg", "_Retval", "PartitionedCall", "StatefulPartitionedCall"}


def _has_gpu_kernel(op_type: str) -> bool:
    # DEFAULT kernels run on any device (variables, functional control flow whose bodies we walk).
    devices = {k.device_type for k in kernels.get_registered_kernels_for_op(op_type).kernel}
    return bool(devices & {"GPU", "DEFAULT"})


def graph_op_types(concrete_function) -> set[str]:
    """All op types in a ConcreteFunction's graph and in every function of its library."""
    graph_def = concrete_function.graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for fn in graph_def.library.function:
        types.update(node.op for node in fn.node_def)
    library_names = {fn.signature.name for fn in graph_def.library.function}
    return types - library_names  # calls to library functions are walked above


def ops_without_gpu_kernel(concrete_function) -> set[str]:
    """Op types that would force a CPU fallback (or fail under XLA on a GPU)."""
    assert tf.test.is_built_with_cuda(), "needs the full tensorflow wheel (CUDA kernels registered)"
    return {t for t in graph_op_types(concrete_function) - _PSEUDO_OPS if not _has_gpu_kernel(t)}
