"""What `prepare` will write, decided before any pixel is read: files, variants, crops and shards.

Every crop gets a global index from the sorted file list, and shard k holds a fixed contiguous
index range, so the output never depends on the number of workers. Crop positions follow the
official `extract_subimages.py` (crop 400, step 200, thresh 0); multiscale variants follow
`generate_multiscale_DF2K.py` (Lanczos x0.75, x0.5, x1/3 and a shortest-edge-400 copy).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from PIL import Image

from real_esrgan_tf import images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# Official generate_multiscale_DF2K.py: scale_list and shortest_edge.
MULTISCALE_FACTORS = (0.75, 0.5, 1 / 3)
SHORTEST_EDGE = 400
DEFAULT_CROPS_PER_SHARD = 512


class PrepareError(Exception):
    """A problem with the inputs or the output folder; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Everything that determines the output bytes (not the worker count)."""

    inputs: tuple[str, ...] = ()
    gt: str = ""
    lq: str = ""
    scale: int = 1  # paired mode: GT size / LQ size
    crop: int = 400
    step: int = 200
    thresh: int = 0
    multiscale: bool = False
    num_shards: int = 0  # 0: one shard per DEFAULT_CROPS_PER_SHARD crops

    @property
    def paired(self) -> bool:
        return bool(self.gt)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A resized copy of a source image; name is stored in image/variant."""

    name: str
    factor: float  # 1.0 original; 0.0 shortest-edge copy

    def size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) exactly as the official script computes it (int() truncation, PIL (w, h) order)."""
        if self.factor == 1.0:
            return height, width
        if self.factor > 0:
            return int(height * self.factor), int(width * self.factor)
        if width < height:
            return int(SHORTEST_EDGE * (height / width)), SHORTEST_EDGE
        return SHORTEST_EDGE, int(SHORTEST_EDGE * (width / height))


ORIGINAL = Variant("x1", 1.0)
MULTISCALE = (
    Variant("x0.75", 0.75),
    Variant("x0.5", 0.5),
    Variant("x0.333", 1 / 3),
    Variant(f"short{SHORTEST_EDGE}", 0.0),
)


def crop_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Official extract_subimages.py positions; a side shorter than the crop gives one short crop."""
    if crop <= 0 or length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def crop_boxes(height: int, width: int, crop: int, step: int, thresh: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) boxes, rows outer, as the official loop."""
    if crop <= 0:
        return [(0, 0, height, width)]
    return [
        (y, x, min(y + crop, height), min(x + crop, width))
        for y in crop_starts(height, crop, step, thresh)
        for x in crop_starts(width, crop, step, thresh)
    ]


@dataclasses.dataclass(frozen=True)
class Segment:
    """Consecutive crops of one (image, variant) that fall in one shard: the unit of worker work."""

    shard: int
    path: str  # absolute, to read
    source: str  # relative, stored in records
    variant: Variant
    boxes: tuple[tuple[int, int, int, int], ...]
    lq_path: str = ""
    lq_source: str = ""
    scale: int = 1

def _list_images(root: str) -> list[str]:
    if not os.path.isdir(root):
        raise PrepareError(f"{root}: not a folder")
    found = []
    seen = set()
    # symlinked sub-folders are followed (DF2K is often DIV2K + Flickr2K linked into one folder),
    # each real folder once, so a link back up cannot loop
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def _header_size(path: str) -> tuple[int, int]:
    """(h, w) from the file header, without decoding pixels; ImageError if it is not an image."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:  # not an OSError: it would end the whole run
        raise images.ImageError(path, f"too large for Pillow ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise images.ImageError(path, f"not a readable image ({e})") from None
    if h <= 0 or w <= 0:
        raise images.ImageError(path, "empty image")
    return h, w


def _file_stamp(path: str) -> list[int]:
    """Size and modification time: a file rewritten in place (same size, e.g. a BMP or TIFF of the
    same dimensions) must not let a resumed run mix crops of its old and new pixels."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _input_prefixes(roots: tuple[str, ...]) -> list[str]:
    """The name each input folder's files get in image/source: "" for a single input, else its last
    path component, or as many trailing components as make the names distinct (a/images, b/images).

    The same folder twice, or one inside another, would prepare its images twice: an error.
    """
    real = [os.path.realpath(r) for r in roots]
    for i, a in enumerate(real):
        for j, b in enumerate(real):
            if i < j and a == b:
                raise PrepareError(f"--input {roots[j]}: the same folder as --input {roots[i]}")
            if i != j and a.startswith(b.rstrip(os.sep) + os.sep):
                raise PrepareError(
                    f"--input {roots[i]} is inside --input {roots[j]}: its images would be prepared twice"
                )
    if len(roots) == 1:
        return [""]
    parts = [os.path.normpath(os.path.abspath(r)).split(os.sep) for r in roots]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]).strip("/") for p in parts]
        if len(set(names)) == len(names):
            return names
    return names  # unreachable: distinct real paths have distinct absolute paths


def _source_name(prefix: str, rel: str) -> str:
    """Relative path; prefixed by the input folder's name when several inputs are given."""
    rel = rel.replace(os.sep, "/")
    return f"{prefix}/{rel}" if prefix else rel


@dataclasses.dataclass
class Plan:
    """The global crop order and its split into shards."""

    segments: list[Segment]
    shard_sizes: list[int]
    skipped: list[dict]
    fingerprint: dict


def _by_stem(files: list[str], side: str, skipped: list[dict]) -> tuple[dict[str, str], set[str]]:
    """Paired mode: name without extension -> file. Names shared by several files (a.png, a.jpg)
    cannot be matched: all of them are skipped with a reason instead of one silently winning."""
    groups: dict[str, list[str]] = {}
    for rel in files:
        groups.setdefault(os.path.splitext(rel)[0], []).append(rel)
    out, ambiguous = {}, set()
    for stem, rels in groups.items():
        if len(rels) == 1:
            out[stem] = rels[0]
            continue
        ambiguous.add(stem)
        for rel in rels:
            others = ", ".join(r for r in rels if r != rel)
            skipped.append({"path": rel, "reason": f"{side} name shared with {others}: cannot pick the pair"})
    return out, ambiguous


def make_plan(config: PrepareConfig) -> Plan:
    skipped: list[dict] = []
    units: list[tuple[Segment, int]] = []  # shard -1 placeholder, crop count
    listing = []
    if config.paired:
        if config.multiscale:
            raise PrepareError("--multiscale is for single-image mode, not --gt/--lq pairs")
        if config.crop % config.scale or config.step % config.scale or config.thresh % config.scale:
            raise PrepareError(f"--crop, --step and --thresh must be multiples of --scale {config.scale}")
        gts, gt_ambiguous = _by_stem(_list_images(config.gt), "GT", skipped)
        lqs, lq_ambiguous = _by_stem(_list_images(config.lq), "LQ", skipped)
        for stem in sorted(set(gts) | set(lqs)):
            if stem in gt_ambiguous or stem in lq_ambiguous:
                side, rel = ("GT", lqs[stem]) if stem in lqs else ("LQ", gts[stem])
                skipped.append(
                    {"path": rel, "reason": f"its {side} partner's name is shared by several files"}
                )
                continue
            if stem not in lqs:
                skipped.append({"path": gts[stem], "reason": "GT has no LQ file with the same name"})
                continue
            if stem not in gts:
                skipped.append({"path": lqs[stem], "reason": "LQ has no GT file with the same name"})
                continue
            gt_path, lq_path = os.path.join(config.gt, gts[stem]), os.path.join(config.lq, lqs[stem])
            try:
                gh, gw = _header_size(gt_path)
                lh, lw = _header_size(lq_path)
            except images.ImageError as e:
                skipped.append(
                    {
                        "path": os.path.relpath(e.path, config.gt if e.path == gt_path else config.lq),
                        "reason": e.reason,
                    }
                )
                continue
            listing.append(
                [gts[stem], gh, gw, *_file_stamp(gt_path), lqs[stem], lh, lw, *_file_stamp(lq_path)]
            )
            if (gh, gw) != (lh * config.scale, lw * config.scale):
                skipped.append(
                    {"path": gts[stem], "reason": f"GT {gh}x{gw} is not {config.scale} x LQ {lh}x{lw}"}
                )
                continue
            s = config.scale
            boxes = [
                (t * s, left * s, b * s, r * s)
                for t, left, b, r in crop_boxes(
                    lh, lw, config.crop // s, config.step // s, config.thresh // s
                )
            ]
            seg = Segment(
                -1,
                gt_path,
                gts[stem].replace(os.sep, "/"),
                ORIGINAL,
                tuple(boxes),
                lq_path,
                lqs[stem].replace(os.sep, "/"),
                s,
            )
            units.append((seg, len(boxes)))
    else:
        if not config.inputs:
            raise PrepareError("give --input DIR (or --gt DIR --lq DIR for pairs)")
        variants = (ORIGINAL,) + (MULTISCALE if config.multiscale else ())
        for root, prefix in zip(config.inputs, _input_prefixes(config.inputs), strict=True):
            for rel in _list_images(root):
                path = os.path.join(root, rel)
                source = _source_name(prefix, rel)
                try:
                    h, w = _header_size(path)
                except images.ImageError as e:
                    skipped.append({"path": source, "reason": e.reason})
                    continue
                listing.append([source, h, w, *_file_stamp(path)])  # a changed file = another plan
                too_small = []
                for v in variants:
                    vh, vw = v.size(h, w)
                    if vh == 0 or vw == 0:  # e.g. x1/3 of a 2-pixel side (PIL cannot resize to 0)
                        too_small.append(v.name)
                        continue
                    boxes = crop_boxes(vh, vw, config.crop, config.step, config.thresh)
                    units.append((Segment(-1, path, source, v, tuple(boxes)), len(boxes)))
                if too_small:
                    copies = f"{', '.join(too_small)} cop{'y' if len(too_small) == 1 else 'ies'}"
                    reason = f"{h}x{w} is too small for the {copies} (a side would be 0 px)"
                    skipped.append({"path": source, "reason": reason + "; its other copies are used"})
    total = sum(n for _, n in units)
    if total == 0:
        raise PrepareError(
            "no usable images in the inputs" + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    num_shards = config.num_shards or math.ceil(total / DEFAULT_CROPS_PER_SHARD)
    num_shards = max(1, min(num_shards, total))
    bounds = [k * total // num_shards for k in range(num_shards + 1)]
    segments: list[Segment] = []
    start = 0
    for seg, n in units:
        # split this unit's crop range [start, start + n) at shard bounds
        pos = start
        while pos < start + n:
            shard = int(np.searchsorted(bounds, pos, side="right")) - 1
            end = min(start + n, bounds[shard + 1])
            segments.append(dataclasses.replace(seg, shard=shard, boxes=seg.boxes[pos - start : end - start]))
            pos = end
        start += n
    shard_sizes = [bounds[k + 1] - bounds[k] for k in range(num_shards)]
    fingerprint = {"config": config_dict(config), "files": listing, "num_shards": num_shards}
    return Plan(segments, shard_sizes, skipped, fingerprint)


def config_dict(config: PrepareConfig) -> dict:
    d = dataclasses.asdict(config)
    d["inputs"] = list(d["inputs"])
    return d

