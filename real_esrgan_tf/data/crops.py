"""The worker side of `prepare`: decode (one image cached per worker), resize, crop, encode PNG.

No TensorFlow unless a 16-bit image needs it, so worker processes start fast.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from real_esrgan_tf import images
from real_esrgan_tf.data.plan import Segment, Variant
from real_esrgan_tf.data.records import CropRecord


@dataclasses.dataclass
class SegmentResult:
    shard: int
    records: list  # CropRecord or (gt CropRecord, lq CropRecord)
    source: str
    planned: int
    error: str = ""
    gray: bool = False
    alpha: bool = False
    sixteen_bit: bool = False


# ----------------------------------------------------------------------------- worker side (no TensorFlow
# unless a 16-bit image needs it)
_cache: dict = {}


def _load(path: str) -> tuple[np.ndarray, bool, bool]:
    """(H, W, 3) uint8/uint16, was_gray, had_alpha; one decoded image is cached per worker."""
    if _cache.get("path") != path:
        decoded = images.read_image(path)
        px = decoded.pixels
        gray, alpha = px.shape[-1] in (1, 2), px.shape[-1] in (2, 4)
        if alpha:
            px = px[..., :-1]
        if px.shape[-1] == 1:
            px = np.repeat(px, 3, axis=-1)
        _cache.clear()
        _cache.update(path=path, pixels=np.ascontiguousarray(px), gray=gray, alpha=alpha)
    return _cache["pixels"], _cache["gray"], _cache["alpha"]


def lanczos_resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL Image.LANCZOS as the official script; 16-bit per channel in float mode 'F'."""
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels, "RGB").resize((width, height), Image.Resampling.LANCZOS))
    chans = [
        np.asarray(
            Image.fromarray(pixels[..., c].astype(np.float32), "F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for c in range(pixels.shape[-1])
    ]
    return np.clip(np.rint(np.stack(chans, -1)), 0, 65535).astype(np.uint16)


def _variant_pixels(path: str, variant: Variant) -> np.ndarray:
    px, _, _ = _load(path)
    if variant.factor == 1.0:
        return px
    key = ("variant", variant.name)
    if _cache.get("variant_key") != key:
        h, w = variant.size(px.shape[0], px.shape[1])
        _cache.update(variant_key=key, variant_pixels=lanczos_resize(px, h, w))
    return _cache["variant_pixels"]


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG; 8-bit via Pillow (zlib level 3 as the official cv2 call), 16-bit via TF."""
    if pixels.dtype == np.uint16:
        return images.encode_image(pixels, "png")
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def _crop_record(pixels, box, source, variant) -> CropRecord:
    t, left, b, r = box
    crop = np.ascontiguousarray(pixels[t:b, left:r])
    return CropRecord(
        encode_png(crop), b - t, r - left, 16 if crop.dtype == np.uint16 else 8, source, variant, box
    )


def process_segment(seg: Segment) -> SegmentResult:
    """Decodes (cached), resizes and crops one segment; a failing image gives an error, not an exception."""
    try:
        px, gray, alpha = _load(seg.path)
        if seg.lq_path:
            lq = images.read_image(seg.lq_path).pixels
            if lq.shape[-1] in (2, 4):
                lq = lq[..., :-1]
            if lq.shape[-1] == 1:
                lq = np.repeat(lq, 3, axis=-1)
            if px.shape[:2] != (lq.shape[0] * seg.scale, lq.shape[1] * seg.scale):
                raise images.ImageError(
                    seg.path, f"decoded GT {px.shape[:2]} is not {seg.scale} x LQ {lq.shape[:2]}"
                )
            s = seg.scale
            records = [
                (
                    _crop_record(px, box, seg.source, seg.variant.name),
                    _crop_record(lq, tuple(v // s for v in box), seg.lq_source, seg.variant.name),
                )
                for box in seg.boxes
            ]
        else:
            vpx = _variant_pixels(seg.path, seg.variant)
            records = [_crop_record(vpx, box, seg.source, seg.variant.name) for box in seg.boxes]
    except images.ImageError as e:
        _cache.clear()
        return SegmentResult(seg.shard, [], seg.source, len(seg.boxes), error=e.reason)
    return SegmentResult(
        seg.shard,
        records,
        seg.source,
        len(seg.boxes),
        gray=gray,
        alpha=alpha,
        sixteen_bit=px.dtype == np.uint16,
    )

