"""Does a different RDB layout help TF's CPU convolutions? One residual dense block two ways.

RRDBNet spends 92 % of its multiply-adds in the 5 convs of each residual dense block (64 features,
growth 32). Officially conv i reads the concatenation of x, x1 .. x(i-1) and writes 32 channels (64
for the last): thin GEMMs. Because conv(concat(a, b)) = conv(a) + conv(b), the same block can also
be run "scattered": as soon as a feature map exists, one conv computes its contribution to every
later conv (64 -> 192, 32 -> 160, 32 -> 128, ...), and the partial sums are added. Same
multiply-adds, wider outputs. This times both (graph mode and XLA) on one block of random weights
and prints ONE JSON line: milliseconds (median of 7), GFLOP/s, and the max difference.

    python benchmarks/bench_rdb_layout_probe.py [side]   # default 128
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FEAT, GROW = 64, 32
OUT = [GROW, GROW, GROW, GROW, FEAT]  # output channels of conv1..conv5


def timed_ms(fn, repeats: int = 7) -> float:
    fn().numpy()
    fn().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def block_weights(rng):
    kernels = [rng.normal(0, 0.05, (3, 3, FEAT + i * GROW, OUT[i])).astype(np.float32) for i in range(5)]
    biases = [rng.normal(0, 0.05, (OUT[i],)).astype(np.float32) for i in range(5)]
    return kernels, biases


def conv(x, w):
    return tf.nn.conv2d(x, w, 1, "SAME")


def dense_block(x, kernels, biases):
    """The official order: conv i over the concatenation of everything so far."""
    feats = [x]
    for i in range(4):
        feats.append(tf.nn.leaky_relu(conv(tf.concat(feats, -1), kernels[i]) + biases[i], 0.2))
    return conv(tf.concat(feats, -1), kernels[4]) + biases[4]


def scatter_kernels(kernels):
    """Source j (x for j = 0, x_j after) -> one kernel producing its share of conv j .. conv 5."""
    def rows(j):
        lo = 0 if j == 0 else FEAT + (j - 1) * GROW
        return slice(lo, lo + (FEAT if j == 0 else GROW))

    return [np.concatenate([kernels[i][:, :, rows(j)] for i in range(j, 5)], -1) for j in range(5)]


def scattered_block(x, scattered, biases):
    partial = [None] * 5
    source = x
    for j in range(5):
        parts = tf.split(conv(source, scattered[j]), OUT[j:], -1)
        for i, part in zip(range(j, 5), parts, strict=True):
            partial[i] = part if partial[i] is None else partial[i] + part
        if j < 4:
            source = tf.nn.leaky_relu(partial[j] + biases[j], 0.2)
    return partial[4] + biases[4]


def main() -> None:
    side = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    rng = np.random.default_rng(0)
    kernels, biases = block_weights(rng)
    scattered = scatter_kernels(kernels)
    x = tf.constant(rng.normal(0, 1, (1, side, side, FEAT)).astype(np.float32))
    macs = side * side * 9 * sum((FEAT + i * GROW) * OUT[i] for i in range(5))
    report = {"side": side}
    for name, fn in [("dense", lambda: dense_block(x, kernels, biases)),
                     ("scattered", lambda: scattered_block(x, scattered, biases))]:
        for suffix, compiled in [("", tf.function(fn)), ("_xla", tf.function(fn, jit_compile=True))]:
            report[f"{name}{suffix}_ms"] = round(timed_ms(compiled), 2)
        report[f"{name}_gflops"] = round(2 * macs / report[f"{name}_ms"] / 1e6, 1)
    difference = dense_block(x, kernels, biases) - scattered_block(x, scattered, biases)
    report["max_abs_diff"] = float(np.abs(difference).max())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
