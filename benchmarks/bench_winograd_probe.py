"""Why the Upscaler has no Winograd convolution: F(2x2, 3x3) written in TF ops vs oneDNN's direct conv.

ncnn reaches an effective 440-477 GFLOP/s on RRDBNet x4plus here (at or above the direct-convolution
peak), which the ncnn-relative speed targets of issue 2 would need us to beat. Winograd F(2x2, 3x3)
does 2.25x fewer multiplies; this script times one such convolution built from TF ops (input
transform by strided slices, 16 batched GEMMs, output transform, depth_to_space), in graph mode and
fused by XLA, against `tf.nn.conv2d` on the same tensors, for RDB-like shapes. Prints ONE JSON line:
milliseconds (median of 7) and the relative error against the float32 direct conv.

    python benchmarks/bench_winograd_probe.py
"""

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def winograd_weights(w):
    """[3, 3, C, O] kernel -> [16, C, O] transformed kernel G g G^T."""
    G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
    u = np.einsum("ai,ijco,bj->abco", G, w, G)
    return u.reshape(16, w.shape[2], w.shape[3])

def winograd_conv(x, u):
    """x [1, H, W, C] (H, W even), u [16, C, O] -> [1, H, W, O], stride 1, zero "same" padding."""
    _, h, w, c = x.shape
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    ev, od = xp[:, 0::2], xp[:, 1::2]  # even / odd padded rows: tile a is rows ev[a], od[a], ev[a+1], od[a+1]
    rows = [ev[:, :-1] - ev[:, 1:], od[:, :-1] + ev[:, 1:], ev[:, 1:] - od[:, :-1], od[:, :-1] - od[:, 1:]]
    v = []
    for r in rows:  # the same B^T combination along columns
        e, o = r[:, :, 0::2], r[:, :, 1::2]
        v += [e[:, :, :-1] - e[:, :, 1:], o[:, :, :-1] + e[:, :, 1:],
              e[:, :, 1:] - o[:, :, :-1], o[:, :, :-1] - o[:, :, 1:]]
    t = (h // 2) * (w // 2)
    V = tf.reshape(tf.stack(v), [16, t, c])
    M = tf.matmul(V, u)  # [16, T, O]
    m = [M[k] for k in range(16)]
    t0 = [m[0 * 4 + j] + m[1 * 4 + j] + m[2 * 4 + j] for j in range(4)]
    t1 = [m[1 * 4 + j] - m[2 * 4 + j] - m[3 * 4 + j] for j in range(4)]
    ys = []
    for tr in (t0, t1):
        ys += [tr[0] + tr[1] + tr[2], tr[1] - tr[2] - tr[3]]
    o = u.shape[-1]
    y = tf.reshape(tf.concat(ys, -1), [1, h // 2, w // 2, 4 * o])
    return tf.nn.depth_to_space(y, 2)

def timed(fn, *args, n=7):
    fn(*args).numpy()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn(*args).numpy()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def main() -> None:
    rng = np.random.default_rng(0)
    out = {"benchmark": "winograd_probe", "machine": f"{os.cpu_count()} cores, no GPU", "convs": {}}
    for cin, cout, size in ((192, 32, 128), (64, 32, 128), (64, 64, 256)):
        x = rng.standard_normal((1, size, size, cin)).astype(np.float32)
        w = (rng.standard_normal((3, 3, cin, cout)) * 0.05).astype(np.float32)
        u = winograd_weights(w)
        ref = tf.nn.conv2d(x, w, 1, "SAME").numpy()
        for dt in (tf.float32, tf.bfloat16):
            xd, wd, ud = (tf.cast(a, dt) for a in (x, w, u))
            direct = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
            wino = tf.function(winograd_conv)
            wino_xla = tf.function(winograd_conv, jit_compile=True)
            err = float(np.abs(tf.cast(wino(xd, ud), tf.float32).numpy() - ref).max() / np.abs(ref).max())
            row = {"direct_ms": 1e3 * timed(direct, xd, wd), "wino_graph_ms": 1e3 * timed(wino, xd, ud),
                   "wino_xla_ms": 1e3 * timed(wino_xla, xd, ud), "rel_err": err}
            key = f"{cin}->{cout}@{size} {dt.name}"
            out["convs"][key] = {k: round(v, 3 if k != "rel_err" else 6) for k, v in row.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
