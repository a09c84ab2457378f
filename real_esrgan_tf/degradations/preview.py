"""A look at what a degradation config does to one image (the library behind `real-esrgan-tf degrade`).

Writes a grid of `--num` degraded versions of a GT crop (each LQ shown at GT size, nearest
neighbour, so the pixels are visible) and a JSON with every parameter each sample drew. Each
sample is its own batch of one, so per-batch draws (resize, noise type, final order) vary too.
"""

from __future__ import annotations

import math

import numpy as np


def gt_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8/16 -> centre crop (size, size, 3) float32 in [0, 1] (gray repeated, alpha dropped)."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    img = pixels.astype(np.float32) / scale
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    pad_h, pad_w = max(0, size - img.shape[0]), max(0, size - img.shape[1])
    if pad_h or pad_w:  # official datasets reflect-pad small images the same way
        mode = "reflect" if pad_h < img.shape[0] and pad_w < img.shape[1] else "symmetric"
        img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size]


def _plain(value, key: str):
    """Tensor values -> JSON values; enum indices -> names."""
    from real_esrgan_tf.degradations.config import KernelType, ResizeDirection, ResizeMode

    v = np.asarray(value).tolist()
    if key.endswith("_type"):
        return KernelType(v).name.lower()
    if key.endswith("_mode"):
        return ResizeMode(v).name.lower()
    if key.endswith("_direction"):
        return ResizeDirection(v).name.lower()
    return round(v, 5) if isinstance(v, float) else v


def degrade_samples(gt: np.ndarray, num: int, seed: int, config) -> tuple[np.ndarray, list[dict]]:
    """gt (S, S, 3) float -> (num LQ images [num, S/scale, S/scale, 3], per-sample parameter dicts)."""
    import tensorflow as tf

    from real_esrgan_tf.degradations import RealESRGANDegrader, sample_kernels

    degrader = RealESRGANDegrader(config, fuse_elementwise=False)  # a few calls: skip XLA compiles

    @tf.function(autograph=False)
    def one(gt, sample_seed):
        kernels, kernel_params = sample_kernels(config, sample_seed, batch_size=1, return_params=True)
        (lq, _, _), params = degrader(gt, kernels, sample_seed, return_params=True)
        return lq[0], {**kernel_params, **params}

    batch = tf.constant(gt[None])
    lqs, records = [], []
    for i in range(num):
        lq, params = one(batch, tf.constant([seed, i], tf.int64))
        lqs.append(lq.numpy())
        record = {"sample": i, "seed": [seed, i]}
        for key, value in params.items():
            value = value.numpy()
            record[key] = _plain(value[0] if value.ndim and value.shape[0] == 1 and key.startswith(
                ("kernel", "final_sinc", "noise", "poisson", "jpeg")) else value, key)
        records.append(record)
    return np.stack(lqs), records


def make_grid(tiles: np.ndarray, tile_size: int, gap: int = 4) -> np.ndarray:
    """[N, h, w, 3] float in [0, 1] -> uint8 grid, each tile nearest-upscaled to tile_size."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    factor = tile_size // tiles.shape[1]
    grid = np.full((rows * (tile_size + gap) - gap, cols * (tile_size + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        big = np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)
        r, c = divmod(i, cols)
        y, x = r * (tile_size + gap), c * (tile_size + gap)
        grid[y:y + tile_size, x:x + tile_size] = np.clip(np.round(big * 255.0), 0, 255).astype(np.uint8)
    return grid


