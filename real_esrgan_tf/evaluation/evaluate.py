"""Evaluating an upscaler on (LQ, GT) pairs: the library behind `real-esrgan-tf evaluate`.

Per image: PSNR and SSIM (BasicSR's, on Y by default, crop_border = scale by default) of the SR
output against the GT and of the bicubic baseline against the GT, and NIQE of the SR output. Without
a GT (LQ-only), NIQE only. The bicubic baseline is MATLAB's `imresize(LQ, scale, 'bicubic')`
(`matlab_resize.bicubic_upscale`, BasicSR's implementation of it), the baseline SR papers report.

Sizes: the GT must be scale x the LQ. A GT larger by less than `scale` pixels on a side (an LQ made
by flooring H / scale) is cropped to scale x LQ from its top-left corner, as BasicSR's
PairedImageDataset does for validation; any other size is an EvaluationError for that image.
Channels: gray images are repeated to RGB and alpha is dropped before measuring (metrics are on
colour); 16-bit images are measured at full precision (see metrics.py).

Inputs come as an iterable of `ImagePair` or `EvaluationError` items (a bad input is reported and
skipped, the others are still evaluated): `iter_folder_pairs` (GT and LQ folders matched by file
stem), `iter_lq_folder` (LQ only) and `iter_shard_pairs` (paired `prepare` shards, full records).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from real_esrgan_tf.evaluation.matlab_resize import bicubic_upscale
from real_esrgan_tf.evaluation.metrics import EvaluationError, calculate_psnr, calculate_ssim
from real_esrgan_tf.evaluation.niqe import BLOCK_SIZE, calculate_niqe

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class Upscaling(Protocol):
    """Anything with `upscale(pixels (H, W, 3) uint8/uint16) -> (sH, sW, 3)`, e.g.
    `real_esrgan_tf.serve.Upscaler`."""

    def upscale(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """One image to evaluate: (H, W, 3) uint8/uint16 RGB; gt None evaluates NIQE only."""

    name: str
    lq: np.ndarray
    gt: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class PairPaths:
    """Files of one name (file stem) in the GT and LQ folders; None where a partner is missing."""

    name: str
    lq_path: str | None
    gt_path: str | None
    problem: str = ""  # e.g. two LQ files with the same stem


@dataclasses.dataclass(frozen=True)
class ImageScores:
    """Scores of one image; None where a metric does not apply (no GT, too small for NIQE)."""

    name: str
    lq_size: tuple[int, int]
    psnr: float | None = None
    ssim: float | None = None
    bicubic_psnr: float | None = None
    bicubic_ssim: float | None = None
    niqe: float | None = None
    gt_cropped: bool = False  # the GT was trimmed to scale x LQ (see module docstring)
    seconds: float = 0.0  # time of the upscale call


METRICS = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "niqe")


def _finite_or_text(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


@dataclasses.dataclass
class EvaluationResult:
    """Per-image rows, failures (one message each, naming the file) and the settings used."""

    scale: int
    crop_border: int
    test_y_channel: bool
    rows: list[ImageScores] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def means(self) -> dict[str, float | None]:
        """Mean of each metric over the images that have it (None if none has); PSNR is the mean
        of per-image PSNRs as in BasicSR (an identical pair's inf makes it inf)."""
        out = {}
        for m in METRICS:
            values = [getattr(r, m) for r in self.rows if getattr(r, m) is not None]
            out[m] = float(np.mean(values)) if values else None
        return out

    def to_json(self) -> str:
        """Strict JSON (non-finite numbers as the strings "inf"/"nan"): settings, images, mean,
        failures."""
        doc = {
            "settings": {"scale": self.scale, "crop_border": self.crop_border,
                         "test_y_channel": self.test_y_channel,
                         "bicubic": "MATLAB imresize bicubic (antialiased)"},
            "images": [
                {k: _finite_or_text(v) for k, v in dataclasses.asdict(r).items()} for r in self.rows
            ],
            "mean": {k: _finite_or_text(v) for k, v in self.means().items()},
            "counts": {m: sum(getattr(r, m) is not None for r in self.rows) for m in METRICS},
            "failures": list(self.failures),
        }
        return json.dumps(doc, indent=1, allow_nan=False)


def _by_stem(folder: str, strip_suffix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """stem -> path for the image files of a folder, and stem -> problem for ambiguous stems."""
    if not os.path.isdir(folder):
        raise EvaluationError(f"{folder}: not a folder")
    found: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        stem, ext = os.path.splitext(entry)
        if ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(path):
            continue
        if strip_suffix and stem.endswith(strip_suffix):
            stem = stem[: -len(strip_suffix)]
        found.setdefault(stem, []).append(path)
    if not found:
        raise EvaluationError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    paths = {s: p[0] for s, p in found.items() if len(p) == 1}
    problems = {s: f"several files with this name in {folder}: {', '.join(map(os.path.basename, p))}"
                for s, p in found.items() if len(p) > 1}
    return paths, problems


def pair_folders(gt_dir: str, lq_dir: str, lq_suffix: str = "") -> list[PairPaths]:
    """GT and LQ files matched by file stem (after removing `lq_suffix`, e.g. "x4", from LQ stems),
    sorted by name. Unmatched files stay in the list with the missing side None; `load_pair` turns
    them into EvaluationErrors. Raises EvaluationError if a folder is missing or has no images."""
    gts, gt_problems = _by_stem(gt_dir)
    lqs, lq_problems = _by_stem(lq_dir, lq_suffix)
    names = sorted(set(gts) | set(lqs) | set(gt_problems) | set(lq_problems))
    return [
        PairPaths(n, lqs.get(n), gts.get(n), gt_problems.get(n) or lq_problems.get(n) or "") for n in names
    ]


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] in (1, 2):  # gray (+ alpha)
        return np.repeat(pixels[..., :1], 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def read_rgb(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8/uint16 RGB (gray repeated, alpha dropped)."""
    from real_esrgan_tf.images import ImageError, read_image

    try:
        return _rgb(read_image(path).pixels)
    except ImageError as e:
        raise EvaluationError(str(e)) from None


def load_pair(paths: PairPaths, need_gt: bool = True) -> ImagePair:
    """Reads one pair; EvaluationError for a missing partner, an ambiguous name or a bad file."""
    if paths.problem:
        raise EvaluationError(f"{paths.name}: {paths.problem}")
    if paths.lq_path is None:
        raise EvaluationError(f"{paths.gt_path}: no LQ file with the same name")
    if need_gt and paths.gt_path is None:
        raise EvaluationError(f"{paths.lq_path}: no GT file with the same name")
    gt = read_rgb(paths.gt_path) if need_gt else None
    return ImagePair(paths.name, read_rgb(paths.lq_path), gt)


def iter_pair_paths(paths: list[PairPaths], need_gt: bool = True) -> Iterator[ImagePair | EvaluationError]:
    """`load_pair` of each entry, an EvaluationError item where it fails."""
    for p in paths:
        try:
            yield load_pair(p, need_gt)
        except EvaluationError as e:
            yield e


def iter_folder_pairs(gt_dir: str, lq_dir: str, lq_suffix: str = "") -> Iterator[ImagePair | EvaluationError]:
    """Pairs from GT and LQ folders (see `pair_folders`), read one at a time."""
    return iter_pair_paths(pair_folders(gt_dir, lq_dir, lq_suffix), need_gt=True)


def iter_lq_folder(lq_dir: str) -> Iterator[ImagePair | EvaluationError]:
    """LQ-only items (NIQE of the output only) from a folder."""
    paths, problems = _by_stem(lq_dir)
    names = sorted(set(paths) | set(problems))
    items = [PairPaths(n, paths.get(n), None, problems.get(n, "")) for n in names]
    return iter_pair_paths(items, need_gt=False)


def _from_unit(values: np.ndarray, bit_depth: int) -> np.ndarray:
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    return np.clip(np.round(values.astype(np.float64) * peak), 0, peak).astype(dtype)


def _data_error_message(message: str) -> str:
    """The data module's own message ('<shard>: record N ...') out of a tf.data assertion error."""
    found = re.search(r"assertion failed: \[(.*?)\]", message, re.DOTALL)
    return " ".join((found.group(1) if found else message).split())[:300]


def iter_shard_pairs(file_pattern, verify_checksums: bool = True) -> Iterator[ImagePair | EvaluationError]:
    """Whole (uncropped) pairs from paired `prepare` shards, in shard order, back at their stored
    bit depth; named "<shard stem>_<record index>". A bad shard or record ends the iteration with
    one EvaluationError naming it (the data module checks shards before and while reading)."""
    import tensorflow as tf

    from real_esrgan_tf.data.dataset import DataError, make_record_dataset

    try:
        dataset = make_record_dataset(file_pattern, paired=True, verify_checksums=verify_checksums)
        records = iter(dataset)
    except (DataError, ValueError) as e:
        yield EvaluationError(str(e))
        return
    while True:
        try:
            item = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            yield EvaluationError(_data_error_message(e.message))
            return
        shard = os.path.splitext(os.path.basename(item["shard"].numpy().decode("utf-8")))[0]
        name = f"{shard}_{int(item['index'])}"
        gt = _from_unit(item["image"].numpy(), int(item["image/bit_depth"]))
        lq = _from_unit(item["lq"].numpy(), int(item["lq/bit_depth"]))
        yield ImagePair(name, lq, gt)


def match_gt(name: str, lq_hw: tuple[int, int], gt: np.ndarray, scale: int) -> tuple[np.ndarray, bool]:
    """The GT trimmed to scale x LQ when it exceeds it by less than `scale` per side: (gt, cropped).

    Raises EvaluationError for any other size."""
    want = (lq_hw[0] * scale, lq_hw[1] * scale)
    have = gt.shape[:2]
    if have == want:
        return gt, False
    if all(w <= h < w + scale for h, w in zip(have, want, strict=True)):
        return gt[: want[0], : want[1]], True
    raise EvaluationError(
        f"{name}: GT is {have[0]}x{have[1]}, not {scale} x the LQ's {lq_hw[0]}x{lq_hw[1]} "
        f"({want[0]}x{want[1]}; up to {scale - 1} extra rows/columns would be cropped)"
    )


def _niqe_or_none(image: np.ndarray, crop_border: int) -> float | None:
    h, w = (s - 2 * crop_border for s in image.shape[:2])
    if (h // BLOCK_SIZE) * (w // BLOCK_SIZE) < 2:
        return None
    return calculate_niqe(image, crop_border)


def score_pair(
    upscaler: Upscaling,
    pair: ImagePair,
    scale: int,
    crop_border: int,
    *,
    test_y_channel: bool = True,
    niqe: bool = True,
    bicubic: bool = True,
) -> tuple[ImageScores, np.ndarray]:
    """Upscales one pair and scores it: (scores, SR output). Raises EvaluationError on bad sizes or
    when the upscaler raises (that image only fails)."""
    lq = _rgb(np.asarray(pair.lq))
    lq_hw = lq.shape[:2]
    gt, cropped = (None, False) if pair.gt is None else match_gt(pair.name, lq_hw, _rgb(pair.gt), scale)
    start = time.perf_counter()
    try:
        sr = _rgb(np.asarray(upscaler.upscale(lq)))
    except Exception as e:  # the model's failure on this image (memory, non-finite output, ...)
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        raise EvaluationError(f"{pair.name}: upscaling failed: {type(e).__name__}: {reason}") from e
    seconds = time.perf_counter() - start
    want = (lq_hw[0] * scale, lq_hw[1] * scale)
    if sr.shape[:2] != want:
        raise EvaluationError(
            f"{pair.name}: the model gave {sr.shape[0]}x{sr.shape[1]} for a {lq_hw[0]}x{lq_hw[1]} LQ, "
            f"expected {want[0]}x{want[1]} (scale {scale})"
        )
    scores = {"niqe": _niqe_or_none(sr, crop_border) if niqe else None}
    if gt is not None:
        scores["psnr"] = calculate_psnr(sr, gt, crop_border, test_y_channel)
        scores["ssim"] = calculate_ssim(sr, gt, crop_border, test_y_channel)
        if bicubic:
            base = bicubic_upscale(lq, scale)
            scores["bicubic_psnr"] = calculate_psnr(base, gt, crop_border, test_y_channel)
            scores["bicubic_ssim"] = calculate_ssim(base, gt, crop_border, test_y_channel)
    return ImageScores(pair.name, lq_hw, gt_cropped=cropped, seconds=seconds, **scores), sr


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


def evaluate(
    upscaler: Upscaling,
    items: Iterable[ImagePair | EvaluationError],
    scale: int,
    crop_border: int | None = None,
    *,
    test_y_channel: bool = True,
    niqe: bool = True,
    bicubic: bool = True,
    save_dir: str | None = None,
    on_item: Callable[[ImageScores | EvaluationError], None] | None = None,
) -> EvaluationResult:
    """Scores every item; bad items become failures and the rest is still evaluated.

    Args:
        upscaler: see `Upscaling`; its outputs must be scale x the LQ.
        items: from `iter_folder_pairs`, `iter_lq_folder`, `iter_shard_pairs` or your own.
        crop_border: default `scale` (BasicSR's convention for SR benchmarks).
        niqe: NIQE of each SR output (skipped, None, for outputs under two 96x96 blocks).
        bicubic: also score the MATLAB-bicubic baseline (pairs with a GT only).
        save_dir: writes each SR output there as <name>.png (atomically; existing files replaced).
        on_item: called after each item (progress bars, printing).
    """
    from real_esrgan_tf.images import ImageError, write_image

    crop_border = scale if crop_border is None else crop_border
    result = EvaluationResult(scale, crop_border, test_y_channel)
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    for item in items:
        if not isinstance(item, EvaluationError):
            try:
                row, sr = score_pair(upscaler, item, scale, crop_border, test_y_channel=test_y_channel,
                                     niqe=niqe, bicubic=bicubic)
                if save_dir:
                    write_image(os.path.join(save_dir, _safe_name(item.name) + ".png"), sr)
                result.rows.append(row)
                item = row
            except ImageError as e:
                item = EvaluationError(str(e))
            except EvaluationError as e:
                item = e
        if isinstance(item, EvaluationError):
            result.failures.append(str(item))
        if on_item is not None:
            on_item(item)
    return result
