"""A deterministic degraded validation set: (LQ, GT) pairs made from GT photographs with the official
second-order degradation (`real_esrgan_tf.degradations`, the one training uses), so a model can be
scored on the kind of input it was trained for, the same set every time.

Image i draws everything (kernels, resize/noise/JPEG parameters, crop position) from its own
stateless seed derived from (seed, i): the same seed gives the same bytes, adding or removing other
images does not change it, and different seeds give different sets. The degrader works on a square
of side `gt_size` at a seeded position (official paired crop); here that side is `crop_size`, by
default the largest multiple of the scale that fits the image (min(H, W) // scale * scale).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from real_esrgan_tf.degradations import (
    DegradationConfig,
    DegradationConfigError,
    RealESRGANDegrader,
    sample_kernels,
)
from real_esrgan_tf.evaluation.metrics import EvaluationError


def image_seed(seed: int, index: int) -> tf.Tensor:
    """The stateless seed [2] (int64) of image `index` in a set made with `seed`."""
    return tf.constant([seed, index], tf.int64)


def _peak(gt: np.ndarray) -> float:
    if gt.dtype == np.uint8:
        return 255.0
    if gt.dtype == np.uint16:
        return 65535.0
    raise EvaluationError(f"GT dtype {gt.dtype} is not uint8 or uint16")


def degrade_one(gt: np.ndarray, config: DegradationConfig, seed: tf.Tensor, crop_size: int | None = None):
    """(LQ uint8 [side/scale, side/scale, 3], GT crop [side, side, 3] in the GT's dtype) of one
    (H, W, 3) uint8/uint16 GT, from the stateless seed [2]."""
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise EvaluationError(f"GT of shape {gt.shape} is not (H, W, 3)")
    peak = _peak(gt)
    h, w = gt.shape[:2]
    side = crop_size or min(h, w) // config.scale * config.scale
    if side > min(h, w):
        raise EvaluationError(f"crop_size {side} does not fit a {h}x{w} GT")
    try:
        cfg = dataclasses.replace(config, gt_size=side)
    except DegradationConfigError as e:
        raise EvaluationError(f"{h}x{w} GT: {e}") from None
    kernels = sample_kernels(cfg, tf.random.experimental.stateless_fold_in(seed, 0), batch_size=1)
    unit = tf.constant(gt[None].astype(np.float32) / np.float32(peak))
    degrader = RealESRGANDegrader(cfg, fuse_elementwise=False)
    lq, gt_crop, _ = degrader(unit, kernels, tf.random.experimental.stateless_fold_in(seed, 1))
    lq = np.clip(np.round(lq[0].numpy() * 255.0), 0, 255).astype(np.uint8)
    gt_crop = np.clip(np.round(gt_crop[0].numpy().astype(np.float64) * peak), 0, peak).astype(gt.dtype)
    return lq, gt_crop


def degraded_validation_pairs(
    gt_images: Iterable[np.ndarray],
    config: DegradationConfig | None = None,
    seed: int = 0,
    scale: int | None = None,
    crop_size: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(LQ uint8, GT) per GT image ((H, W, 3) uint8 or uint16; the GT keeps its dtype).

    Args:
        config: degradation settings (default: official x4plus); its gt_size is replaced per image.
        seed: the set's seed; image i uses `image_seed(seed, i)`.
        scale: overrides config.scale (1, 2 or 4); the LQ side is the crop side / scale.
        crop_size: side of the square GT crop (a multiple of scale); default the largest that fits.
    """
    config = config or DegradationConfig()
    if scale is not None and scale != config.scale:
        try:
            gt_size = config.gt_size // scale * scale or scale  # replaced per image anyway
            config = dataclasses.replace(config, scale=scale, gt_size=gt_size)
        except DegradationConfigError as e:
            raise EvaluationError(str(e)) from None
    if crop_size is not None and crop_size % config.scale:
        raise EvaluationError(f"crop_size {crop_size} is not a multiple of the scale {config.scale}")
    for index, gt in enumerate(gt_images):
        yield degrade_one(np.asarray(gt), config, image_seed(seed, index), crop_size)


def write_validation_set(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], output_dir: str, names: Sequence[str] | None = None
) -> list[str]:
    """Writes output_dir/gt/<name>.png and output_dir/lq/<name>.png (atomic writes) per pair, names
    default "0000", "0001", ...; returns the names. Ready for `iter_folder_pairs(gt, lq)`."""
    from real_esrgan_tf.images import write_image

    gt_dir, lq_dir = os.path.join(output_dir, "gt"), os.path.join(output_dir, "lq")
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    written = []
    for index, (lq, gt) in enumerate(pairs):
        name = names[index] if names is not None else f"{index:04d}"
        write_image(os.path.join(gt_dir, name + ".png"), gt)
        write_image(os.path.join(lq_dir, name + ".png"), lq)
        written.append(name)
    return written
