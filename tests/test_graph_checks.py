"""The GPU-kernel check itself must be able to fail."""

import tensorflow as tf

from tests.graph_checks import ops_without_gpu_kernel


def test_flags_cpu_only_op():
    @tf.function
    def f(x):
        return tf.image.resize(x, (8, 8), method="bicubic")  # ResizeBicubic: CPU only

    cf = f.get_concrete_function(tf.TensorSpec((1, 4, 4, 3), tf.float32))
    assert "ResizeBicubic" in ops_without_gpu_kernel(cf)


def test_passes_gpu_ops_and_walks_nested_functions():
    @tf.function
    def inner(x):
        return tf.nn.conv2d(x, tf.ones((3, 3, 3, 3)), 1, "SAME")

    @tf.function
    def f(x):
        y = tf.while_loop(lambda i, v: i < 2, lambda i, v: (i + 1, inner(v)), (0, x))[1]
        return tf.image.resize(y, (8, 8), method="bilinear")

    cf = f.get_concrete_function(tf.TensorSpec((1, 4, 4, 3), tf.float32))
    assert ops_without_gpu_kernel(cf) == set()


def test_detects_cpu_op_inside_nested_function():
    @tf.function
    def inner(x):
        return tf.io.encode_jpeg(x)

    @tf.function
    def f(x):
        return inner(x)

    cf = f.get_concrete_function(tf.TensorSpec((4, 4, 3), tf.uint8))
    assert "EncodeJpeg" in ops_without_gpu_kernel(cf)
