"""What a trainer watches: TensorBoard scalars and images, validation PSNR/SSIM, a progress line.

Validation scores are BasicSR's `calculate_psnr` / `calculate_ssim` with `test_y_channel`, computed by
`real_esrgan_tf.evaluation.metrics` (checked against BasicSR's code) on the 8-bit-rounded images,
`scale` pixels cropped from every border.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from real_esrgan_tf.evaluation.metrics import calculate_psnr, calculate_ssim, rgb_to_y
from real_esrgan_tf.models.layers import input_multiple
from real_esrgan_tf.tiling import reflect_pad_to_multiple


def _to_uint8(images) -> np.ndarray:
    """RGB in [0, 1] -> uint8, rounded as BasicSR's tensor2img before its metrics."""
    return np.round(np.clip(np.asarray(images, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def y_channel(images) -> np.ndarray:
    """RGB in [0, 1], (H, W, 3) -> the luma BasicSR measures on: Y of the 8-bit image, 0..255, (H, W)."""
    return rgb_to_y(_to_uint8(images))[..., 0].astype(np.float64)


def psnr_y(sr, gt, crop_border: int) -> float:
    """PSNR (dB) on the Y channel of one image pair (H, W, 3) in [0, 1] (`evaluation.calculate_psnr`)."""
    return calculate_psnr(_to_uint8(sr), _to_uint8(gt), crop_border)


def ssim_y(sr, gt, crop_border: int) -> float:
    """SSIM on the Y channel of one image pair (H, W, 3) in [0, 1] (`evaluation.calculate_ssim`)."""
    return calculate_ssim(_to_uint8(sr), _to_uint8(gt), crop_border)


def validate(generator, dataset, scale: int, max_images: int) -> dict[str, float]:
    """Mean Y-channel PSNR/SSIM of `generator` over paired batches {"lq", "gt"} (batch 1, any size).

    LQ sides that the x2/x1 RRDBNet cannot unshuffle are reflect-padded at the bottom/right and the
    SR cropped back, as the official RealESRGANer's mod padding does.
    """
    factor = input_multiple(generator)  # RRDBNet x2 / x1: 2 / 4
    psnrs, ssims = [], []
    for batch in dataset.take(max_images):
        lq = batch["lq"].numpy()
        h, w = lq.shape[1:3]
        lq = reflect_pad_to_multiple(lq, factor)
        sr = generator(lq, training=False).numpy()[:, : h * scale, : w * scale]
        sr = np.clip(sr.astype(np.float32), 0.0, 1.0)
        for s, g in zip(sr, batch["gt"].numpy(), strict=True):
            psnrs.append(psnr_y(s, g, scale))
            ssims.append(ssim_y(s, g, scale))
    return {"val_psnr_y": float(np.mean(psnrs)), "val_ssim_y": float(np.mean(ssims))}


def side_by_side(lq, sr, gt):
    """(B, h, w, 3), (B, H, W, 3), (B, H, W, 3) -> (B, H, 3W, 3) image strips LQ | SR | GT in [0, 1]."""
    height, width = tf.shape(gt)[1], tf.shape(gt)[2]
    lq_up = tf.image.resize(tf.cast(lq, tf.float32), (height, width), method="nearest")
    strips = [lq_up, tf.cast(sr, tf.float32), tf.cast(gt, tf.float32)]
    return tf.clip_by_value(tf.concat(strips, axis=2), 0.0, 1.0)


def _metadata(plugin: str, data_class: int) -> bytes:
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin), data_class=data_class
    ).SerializeToString()


class TrainingSummaries:
    """TensorBoard event files under `model_dir/logs`.

    Written with the core `tf.summary.write` op and TensorBoard's plugin metadata ("scalars",
    "images"), so training does not need the tensorboard package, only viewing does.
    """

    _SCALAR = 1  # summary_pb2.DATA_CLASS_SCALAR
    _BLOB_SEQUENCE = 3  # summary_pb2.DATA_CLASS_BLOB_SEQUENCE

    def __init__(self, model_dir: str):
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        metadata = _metadata("scalars", self._SCALAR)
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)
        self.writer.flush()

    def images(self, step: int, lq, sr, gt, max_outputs: int = 4) -> None:
        """LQ | SR | GT strips as PNGs: [width, height, png...] strings, as tf.summary.image writes."""
        strips = side_by_side(lq, sr, gt)[:max_outputs]
        pngs = [
            tf.io.encode_png(tf.image.convert_image_dtype(img, tf.uint8, saturate=True)) for img in strips
        ]
        shape = tf.shape(strips)
        tensor = tf.stack([tf.strings.as_string(shape[2]), tf.strings.as_string(shape[1]), *pngs])
        with self.writer.as_default(step=step):
            tf.summary.write("lq_sr_gt", tensor, metadata=_metadata("images", self._BLOB_SEQUENCE))
        self.writer.flush()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h:02d}:{m:02d}:{s:02d}"


class ProgressLine:
    """`step 1200/400000 (0.3%) | l_g_pix 0.0312 ... | 1.52 s/it | ETA 7d 00:31:12`."""

    def __init__(self, total_steps: int, start_step: int, clock=time.monotonic):
        self.total = total_steps
        self.clock = clock
        self.last_step, self.last_time = start_step, clock()
        self.seconds_per_step = None

    def update(self, step: int, metrics: dict[str, float]) -> str:
        now = self.clock()
        if step > self.last_step:
            current = (now - self.last_time) / (step - self.last_step)
            # smoothed, so one slow step (a checkpoint save) does not swing the ETA
            sps = self.seconds_per_step
            self.seconds_per_step = current if sps is None else 0.7 * sps + 0.3 * current
        self.last_step, self.last_time = step, now
        losses = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = f"step {step}/{self.total} ({100.0 * step / self.total:.1f}%) | {losses}"
        if self.seconds_per_step is not None:
            eta = format_duration((self.total - step) * self.seconds_per_step)
            line += f" | {self.seconds_per_step:.3g} s/it | ETA {eta}"
        return line
