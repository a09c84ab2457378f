"""The official second-order degradation (RealESRGANModel.feed_data) as one in-graph function.

Shapes are static everywhere (XLA): an image whose size is drawn per batch lives in the top-left
of a fixed canvas with zeros around it (see resize.py). To avoid paying for the largest canvas on
every batch, the first stage's post-resize work (noise, JPEG, second blur, second resize) runs in a
`tf.switch_case` over a few canvas sizes ("buckets"); only the taken branch executes, in graph mode
and under XLA alike. Canvas sides are multiples of 16 and zero outside the image, so DiffJPEG on the
canvas equals the official zero-pad-to-16 DiffJPEG on the image.
"""

from __future__ import annotations

import math

import tensorflow as tf

from real_esrgan_tf.degradations.config import DegradationConfig, NoiseResizeConfig
from real_esrgan_tf.degradations.filtering import USMSharp, filter2d
from real_esrgan_tf.degradations.jpeg import diff_jpeg
from real_esrgan_tf.degradations.kernels import categorical
from real_esrgan_tf.degradations.noise import gaussian_noise, poisson_noise
from real_esrgan_tf.degradations.resize import output_size, resize

_INT_RANGE = {"minval": -(2**31) + 1, "maxval": 2**31 - 1, "dtype": tf.int32}


def _ceil16(n: int) -> int:
    return -(-n // 16) * 16


def _valid_mask(capacity: tuple[int, int], hw) -> tf.Tensor:
    """[1, Hc, Wc, 1] bool: True on the top-left (h, w) of the canvas."""
    rows = tf.range(capacity[0])[:, None] < hw[0]
    cols = tf.range(capacity[1])[None, :] < hw[1]
    return (rows & cols)[None, :, :, None]


def _draw_resize(cfg: NoiseResizeConfig, u_direction, u_scale, u_mode):
    """Per-batch resize draw: direction by resize_prob, scale U(1, hi) / U(lo, 1) / 1, mode uniform."""
    direction = categorical(u_direction, cfg.resize_prob.as_tuple())
    lo, hi = cfg.resize_range
    scale = tf.gather(tf.stack([1.0 + (hi - 1.0) * u_scale, lo + (1.0 - lo) * u_scale, tf.constant(1.0)]),
                      direction)
    mode = tf.minimum(tf.cast(tf.floor(u_mode * 3.0), tf.int32), 2)
    return direction, scale, mode


def draw_branches(config: DegradationConfig, seed, batch_size) -> dict[str, tf.Tensor]:
    """Every random choice of the degradation except the kernels, as a pure function of the seed.

    The degrader draws through this function, so its branch frequencies can be checked over many
    seeds without running the image pipeline. Per batch, as the official `feed_data` does with
    `np.random.uniform()`: resize direction (up/down/keep by `resize_prob`), scale and mode of both
    stages, Gaussian vs Poisson noise, the second blur, the final order, the final resize mode and
    the crop location. Per sample ([B], as the official `torch.rand(size)` draws): noise sigma, gray
    noise, Poisson scale and JPEG quality of both stages.

    Args:
        config: the degradation settings.
        seed: int [2] stateless seed (the same one the degrader is called with).
        batch_size: B (an int or a scalar tensor).

    Returns:
        A dict of tensors: `resize{1,2}_{direction,scale,mode}`, `gaussian_noise{1,2}`, `second_blur`,
        `final_resize_first`, `final_resize_mode` (scalars); `noise{1,2}_{sigma,gray}`,
        `poisson{1,2}_scale`, `jpeg{1,2}_quality` ([B]); `noise{1,2}_seed` ([2], the noise draws'
        seeds) and `crop_{top,left}_u` (uniforms that place the crop).
    """
    seeds = tf.random.stateless_uniform([6, 2], seed=seed, **_INT_RANGE)
    ub = tf.random.stateless_uniform([16], seed=seeds[0])  # per-batch draws
    us = tf.random.stateless_uniform(tf.stack([batch_size, 8]), seed=seeds[1])  # per-sample draws
    s1, s2 = config.stage1, config.stage2
    dir1, scale1, mode1 = _draw_resize(s1, ub[0], ub[1], ub[2])
    dir2, scale2, mode2 = _draw_resize(s2, ub[5], ub[6], ub[7])

    def between(u, r):
        return r[0] + (r[1] - r[0]) * u

    return {
        "resize1_direction": dir1, "resize1_scale": scale1, "resize1_mode": mode1,
        "gaussian_noise1": ub[3] < s1.gaussian_noise_prob,
        "second_blur": ub[4] < config.second_blur_prob,
        "resize2_direction": dir2, "resize2_scale": scale2, "resize2_mode": mode2,
        "gaussian_noise2": ub[8] < s2.gaussian_noise_prob,
        # final order: [resize, sinc, JPEG] with p 0.5, else [JPEG, resize, sinc]
        "final_resize_first": ub[9] < 0.5,
        "final_resize_mode": tf.minimum(tf.cast(tf.floor(ub[10] * 3.0), tf.int32), 2),
        "noise1_sigma": between(us[:, 0], s1.noise_range), "noise1_gray": us[:, 1] < s1.gray_noise_prob,
        "poisson1_scale": between(us[:, 2], s1.poisson_scale_range),
        "jpeg1_quality": between(us[:, 3], s1.jpeg_range),
        "noise2_sigma": between(us[:, 4], s2.noise_range), "noise2_gray": us[:, 5] < s2.gray_noise_prob,
        "poisson2_scale": between(us[:, 6], s2.poisson_scale_range),
        "jpeg2_quality": between(us[:, 7], s2.jpeg_range),
        "noise1_seed": seeds[2], "noise2_seed": seeds[3], "crop_top_u": ub[11], "crop_left_u": ub[12],
    }


class RealESRGANDegrader:
    """`degrader(gt, kernels, seed) -> (lq, gt, gt_usm)`: a pure function of its inputs.

    gt: float32 [B, H, W, 3] in [0, 1] with static H, W >= gt_size (official: 400x400 crops);
    kernels: `sample_kernels(config, seed, batch_size=B)` (each [B, 21, 21]); seed: int [2].
    Returns lq [B, gt_size/scale, gt_size/scale, 3] (8-bit levels in [0, 1]) and gt, gt_usm
    [B, gt_size, gt_size, 3], cropped at one random location per batch as the official code does.
    With `return_params=True`, also a dict of every drawn value (batch scalars and [B] vectors).
    `config.second_order = False` (ablation) skips the second blur, resize and noise: the first stage
    feeds the final stage directly; every draw stays the same, the second stage's go unused (and are
    left out of the returned parameters).
    """

    def __init__(self, config: DegradationConfig | None = None, num_buckets: int = 4,
                 fuse_elementwise: bool = True):
        """num_buckets: stage-1 canvas sizes to choose from. fuse_elementwise: run DiffJPEG and the
        Poisson math as nested XLA clusters in graph mode (faster per step, but each canvas shape
        compiles once: turn off for a few one-off calls)."""
        self.config = config or DegradationConfig()
        self.num_buckets = num_buckets
        self.fused = fuse_elementwise
        self.usm = USMSharp.from_config(self.config)

    def _stage1_caps(self, height: int, width: int) -> list[tuple[int, int]]:
        hi = self.config.stage1.resize_range[1]
        max_h, max_w = math.floor(height * hi), math.floor(width * hi)
        caps = []
        for i in range(1, self.num_buckets + 1):
            fraction = i / self.num_buckets
            cap = (_ceil16(math.ceil(max_h * fraction)), _ceil16(math.ceil(max_w * fraction)))
            if cap not in caps:
                caps.append(cap)
        return caps

    def __call__(self, gt, kernels, seed, return_params: bool = False):
        cfg = self.config
        gt = tf.convert_to_tensor(gt, tf.float32)
        _, height, width, _ = gt.shape
        if height is None or width is None:
            raise ValueError("RealESRGANDegrader needs a static GT height and width (set the crop size)")
        if height < cfg.gt_size or width < cfg.gt_size:
            raise ValueError(f"GT {height}x{width} is smaller than gt_size {cfg.gt_size}")
        lq_hw = (height // cfg.scale, width // cfg.scale)
        batch = tf.shape(gt)[0]

        d = draw_branches(cfg, seed, batch)
        s2 = cfg.stage2

        def add_noise(canvas, valid, stage):
            sigma, gray = d[f"noise{stage}_sigma"], d[f"noise{stage}_gray"]
            pscale, noise_seed = d[f"poisson{stage}_scale"], d[f"noise{stage}_seed"]
            noise = tf.cond(d[f"gaussian_noise{stage}"],
                            lambda: gaussian_noise(canvas, sigma, gray, noise_seed),
                            lambda: poisson_noise(canvas, pscale, gray, noise_seed, valid, self.fused))
            return tf.clip_by_value(canvas + noise, 0.0, 1.0) * tf.cast(valid, tf.float32)

        # ---- first stage: USM -> blur -> resize (scale_factor) -> noise -> JPEG
        gt_usm = self.usm(gt)
        blurred = filter2d(gt_usm, kernels["kernel1"])
        scale1, scale2 = d["resize1_scale"], d["resize2_scale"]
        hw1 = (output_size(height, scale1), output_size(width, scale1))
        hw2 = (output_size(height / cfg.scale, scale2), output_size(width / cfg.scale, scale2))
        cap2 = (_ceil16(math.floor(height / cfg.scale * s2.resize_range[1])),
                _ceil16(math.floor(width / cfg.scale * s2.resize_range[1])))

        sinc = kernels["sinc_kernel"]

        def final_stage(canvas, hw, valid):
            """Resize to H / scale + sinc and JPEG, in a random order (canvas: valid top-left hw)."""
            def resize_sinc_jpeg():
                out = resize(canvas, hw, lq_hw, lq_hw, d["final_resize_mode"])
                out = tf.clip_by_value(filter2d(out, sinc), 0.0, 1.0)
                return diff_jpeg(out, d["jpeg2_quality"], self.fused)

            def jpeg_resize_sinc():
                # the canvas is already in [0, 1] (clamped after the noise / JPEG)
                out = diff_jpeg(canvas, d["jpeg2_quality"], self.fused) * tf.cast(valid, tf.float32)
                return filter2d(resize(out, hw, lq_hw, lq_hw, d["final_resize_mode"]), sinc)

            return tf.cond(d["final_resize_first"], resize_sinc_jpeg, jpeg_resize_sinc)

        def stage1_tail(cap):
            def branch():
                valid = _valid_mask(cap, hw1)
                canvas = resize(blurred, (height, width), hw1, cap, d["resize1_mode"], scale=scale1)
                canvas = add_noise(canvas, valid, 1)
                canvas = diff_jpeg(canvas, d["jpeg1_quality"], self.fused) * tf.cast(valid, tf.float32)
                if not cfg.second_order:  # ablation: first-order degradation, then the final stage
                    return final_stage(canvas, hw1, valid)
                # ---- second stage: blur (p 0.8) -> resize to size(H / scale * s2)
                canvas = tf.cond(d["second_blur"], lambda: filter2d(canvas, kernels["kernel2"], hw1),
                                 lambda: canvas)
                return resize(canvas, hw1, hw2, cap2, d["resize2_mode"])
            return branch

        caps = self._stage1_caps(height, width)
        bucket = tf.maximum(
            tf.reduce_sum(tf.cast(hw1[0] > tf.constant([c[0] for c in caps]), tf.int32)),
            tf.reduce_sum(tf.cast(hw1[1] > tf.constant([c[1] for c in caps]), tf.int32)))
        bucket = tf.minimum(bucket, len(caps) - 1)
        canvas = tf.switch_case(bucket, [stage1_tail(c) for c in caps])
        if cfg.second_order:
            valid2 = _valid_mask(cap2, hw2)
            canvas = add_noise(canvas, valid2, 2)
            # ---- final: resize to H / scale + sinc and JPEG, in a random order
            out = final_stage(canvas, hw2, valid2)
        else:
            out = canvas
        lq = tf.clip_by_value(tf.round(out * 255.0), 0.0, 255.0) / 255.0

        # ---- paired random crop, one location for the batch (official paired_random_crop)
        lq_patch = cfg.gt_size // cfg.scale
        top, left = (tf.minimum(tf.cast(d[f"crop_{side}_u"] * (n - lq_patch + 1), tf.int32), n - lq_patch)
                     for side, n in (("top", lq_hw[0]), ("left", lq_hw[1])))
        if (height, width) != (cfg.gt_size, cfg.gt_size):
            gt_top, gt_left = top * cfg.scale, left * cfg.scale
            gt = tf.slice(gt, tf.stack([0, gt_top, gt_left, 0]), [-1, cfg.gt_size, cfg.gt_size, 3])
            gt_usm = tf.slice(gt_usm, tf.stack([0, gt_top, gt_left, 0]), [-1, cfg.gt_size, cfg.gt_size, 3])
        if lq_hw != (lq_patch, lq_patch):
            lq = tf.slice(lq, tf.stack([0, top, left, 0]), [-1, lq_patch, lq_patch, 3])
        if not return_params:
            return lq, gt, gt_usm
        params = {k: v for k, v in d.items() if not k.endswith(("_seed", "_u"))}
        params.update(resize1_size=tf.stack(hw1), resize2_size=tf.stack(hw2), crop_top=top, crop_left=left)
        if not cfg.second_order:  # report only what was applied (the final JPEG keeps jpeg2_quality)
            for key in ("second_blur", "resize2_direction", "resize2_scale", "resize2_mode", "resize2_size",
                        "gaussian_noise2", "noise2_sigma", "noise2_gray", "poisson2_scale"):
                del params[key]
        return (lq, gt, gt_usm), params

