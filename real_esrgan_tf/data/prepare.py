"""`real-esrgan-tf prepare`: image folders -> PNG sub-image crops in TFRecord shards + manifest.json.

Same recipe as the official scripts: `generate_multiscale_DF2K.py` (PIL Lanczos x0.75, x0.5, x1/3 and
a shortest-edge-400 copy) then `extract_subimages.py` (crop 400, step 200, thresh 0). Output does not
depend on `--workers`: every crop gets a global index from the sorted file list before any work
starts, shard k holds a fixed contiguous index range, and the parent writes records in that order
(workers only decode, crop and encode; at most IN_FLIGHT_PER_WORKER segments per worker are handed
out and not yet written, so memory stays bounded whatever the speed of the writer). Resumable: a
shard is written to a temp name, renamed, then its SHA-256 and count go to `.prepare_state/`; a rerun
keeps shards whose checksum still matches.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.reduction
import os
import queue
import signal
import sys
import threading
import time
import traceback

import numpy as np
from absl import flags, logging
from PIL import Image

from real_esrgan_tf import images
from real_esrgan_tf.data.records import MANIFEST_NAME, SHARD_SUFFIX, CropRecord

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
STATE_DIR = ".prepare_state"
MANIFEST_FORMAT = "real-esrgan-tf shards v1"
# Official generate_multiscale_DF2K.py: scale_list and shortest_edge.
MULTISCALE_FACTORS = (0.75, 0.5, 1 / 3)
SHORTEST_EDGE = 400
DEFAULT_CROPS_PER_SHARD = 512
# With --workers N, at most N x this many segments (one image variant's crops within one shard) are
# handed to workers and not yet written: one being computed and one queued per worker keeps them busy,
# and a writer slower than the workers makes them wait instead of piling results up in memory.
IN_FLIGHT_PER_WORKER = 2


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
    fingerprint = {"config": _config_dict(config), "files": listing, "num_shards": num_shards}
    return Plan(segments, shard_sizes, skipped, fingerprint)


def _config_dict(config: PrepareConfig) -> dict:
    d = dataclasses.asdict(config)
    d["inputs"] = list(d["inputs"])
    return d


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


# ----------------------------------------------------------------------------- worker processes


class WorkerError(Exception):
    """A worker failed on item `index` (None: the worker was idle): an exception in `fn` (`details`
    holds its traceback) or the worker process ended (killed, e.g. by the out-of-memory killer)."""

    def __init__(self, index: int | None, reason: str, details: str = ""):
        super().__init__(reason)
        self.index, self.reason, self.details = index, reason, details


def _worker_loop(fn, conn) -> None:
    """A worker process: items in, ("ok", fn(item)) or ("error", (reason, traceback)) out, in order,
    until the parent closes its end of the pipe."""
    # Ctrl-C reaches every process of the terminal's process group: only the parent acts on it (it
    # stops the workers); a worker interrupted mid-item would only print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Items are read by a thread as they come, so the parent's send never waits for this process:
    # it could be blocked sending a large result the parent will only read after that send (deadlock).
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    stop = object()

    def read() -> None:
        try:
            while True:
                inbox.put(conn.recv())
        except BaseException:  # EOF: the parent is done or gone; anything else ends the worker too
            inbox.put(stop)

    threading.Thread(target=read, daemon=True).start()
    while (item := inbox.get()) is not stop:
        try:
            out = ("ok", fn(item))
            payload = multiprocessing.reduction.ForkingPickler.dumps(out)
        except Exception as e:
            out = ("error", (f"{type(e).__name__}: {e}", traceback.format_exc()))
            payload = multiprocessing.reduction.ForkingPickler.dumps(out)
        del out
        try:
            conn.send_bytes(payload)
        except OSError:  # the parent has gone
            return


def _stop_workers(procs: list, conns: list, graceful: bool) -> None:
    """Closes the pipes (idle workers end on EOF) and joins every worker; terminates (then kills) the
    ones still running unless `graceful` (all items done), or still alive after a grace period."""
    for conn in conns:
        conn.close()
    if graceful:
        for p in procs:
            p.join(timeout=10)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()


def ordered_map(fn, items, workers: int, in_flight_per_worker: int = IN_FLIGHT_PER_WORKER):
    """Yields fn(item) for each item in order, computed by `workers` spawned processes.

    At most `workers * in_flight_per_worker` items are handed out and not yet taken by the caller
    (the one being yielded included): a caller slower than the workers makes them wait rather than
    letting results pile up. Each worker has its own pipe, so one that dies is an error naming its
    item (WorkerError), not a hang, and stopping the rest is safe at any point. Closing the generator
    (or an exception, KeyboardInterrupt included) terminates and joins the workers. workers <= 1:
    a plain in-process map.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    limit = max(1, workers * in_flight_per_worker)
    # spawn: the parent may already hold TensorFlow's threads, which fork does not survive
    ctx = multiprocessing.get_context("spawn")
    procs, conns, assigned = [], [], []  # assigned[w]: indices sent to worker w, not yet answered
    ready: dict = {}
    sent = 0
    finished = False

    def died(w: int) -> WorkerError:
        p = procs[w]
        p.join(timeout=5)
        code = p.exitcode
        if code is None:
            how = "its pipe closed"
        elif code < 0:
            how = f"killed by signal {-code}" + (", e.g. by the out-of-memory killer" if code == -9 else "")
        else:
            how = f"exit code {code}"
        index = assigned[w][0] if assigned[w] else None
        return WorkerError(index, f"a worker process ended unexpectedly ({how})")

    def receive(timeout) -> None:
        for conn in multiprocessing.connection.wait(conns, timeout):
            w = conns.index(conn)
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                raise died(w) from None
            if not assigned[w]:
                raise WorkerError(None, "a worker process answered an item it was not given")
            index = assigned[w].popleft()
            if status != "ok":
                raise WorkerError(index, *payload)
            ready[index] = payload

    try:
        for _ in range(min(workers, len(items))):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_worker_loop, args=(fn, child_end), daemon=True, name="prepare-worker")
            procs.append(p)
            conns.append(parent_end)
            assigned.append(collections.deque())
            p.start()
            child_end.close()  # only the worker holds it now: its death reads as EOF here
        for i in range(len(items)):
            while True:
                while sent < len(items) and sent - i < limit:  # hand out up to the bound
                    w = min(range(len(conns)), key=lambda k: len(assigned[k]))
                    try:
                        conns[w].send(items[sent])
                    except OSError:
                        raise died(w) from None
                    assigned[w].append(sent)
                    sent += 1
                if i in ready:
                    receive(0)  # take what is done so the workers can go on while the caller works
                    break
                receive(None)
            result = ready.pop(i)
            yield result
            del result
        finished = True
    finally:
        _stop_workers(procs, conns, graceful=finished)


# ----------------------------------------------------------------------------- parent side


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}{SHARD_SUFFIX}"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: str, obj) -> None:
    images.write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _plan_difference(previous: dict, fingerprint: dict) -> str:
    """What changed since the run whose shards are in the output folder, for the error message."""
    if (
        previous.get("config") != fingerprint["config"]
        or previous.get("num_shards") != fingerprint["num_shards"]
    ):
        return "other inputs or flags"
    old = {f[0]: f for f in previous.get("files", [])}
    for f in fingerprint["files"]:
        if old.get(f[0]) != f:
            return f"{f[0]} is new or changed since"
    return "input files removed since"


def _complete_shards(output: str, plan: Plan, overwrite: bool) -> dict[int, dict]:
    """Shards finished by an earlier run of the same plan whose bytes still match their checksum."""
    state = os.path.join(output, STATE_DIR)
    plan_path = os.path.join(state, "plan.json")
    if os.path.exists(plan_path) and not overwrite:
        with open(plan_path) as f:
            previous = json.load(f)
        if previous != plan.fingerprint:
            why = _plan_difference(previous, plan.fingerprint)
            raise PrepareError(
                f"{output}: holds shards of a different prepare run ({why}); "
                "use another --output or --overwrite"
            )
    os.makedirs(state, exist_ok=True)
    if overwrite:
        for name in os.listdir(output):
            if name.endswith(SHARD_SUFFIX) or name == MANIFEST_NAME:
                os.unlink(os.path.join(output, name))
        for name in os.listdir(state):
            os.unlink(os.path.join(state, name))
    _write_json(plan_path, plan.fingerprint)
    n = len(plan.shard_sizes)
    done = {}
    for k in range(n):
        rec_path = os.path.join(state, f"{shard_name(k, n)}.json")
        shard_path = os.path.join(output, shard_name(k, n))
        if os.path.exists(rec_path) and os.path.exists(shard_path):
            with open(rec_path) as f:
                info = json.load(f)
            if sha256_file(shard_path) == info["sha256"]:
                done[k] = info
                continue
            logging.warning("%s: checksum differs from the one recorded; rewriting it", shard_path)
        for p in (rec_path, shard_path):
            if os.path.exists(p):
                os.unlink(p)
    for name in os.listdir(output):  # temp files of a killed run
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(output, name))
    return done


class _ShardWriter:
    """Writes one shard to a temp name; finish() renames it and records checksum and counts."""

    def __init__(self, output: str, k: int, n: int):
        import tensorflow as tf

        self.final = os.path.join(output, shard_name(k, n))
        self.tmp = os.path.join(output, f".tmp-{shard_name(k, n)}")
        self.record_path = os.path.join(output, STATE_DIR, f"{shard_name(k, n)}.json")
        self.writer = tf.io.TFRecordWriter(self.tmp)
        self.info = {
            "file": shard_name(k, n),
            "records": 0,
            "skipped": {},
            "gray": [],
            "alpha": [],
            "sixteen_bit": [],
        }

    def add(self, result: SegmentResult) -> None:
        from real_esrgan_tf.data.records import build_example

        if result.error:
            self.info["skipped"][result.source] = result.error
            return
        for rec in result.records:
            self.writer.write(build_example(*rec) if isinstance(rec, tuple) else build_example(rec))
        self.info["records"] += len(result.records)
        for key, flag in (
            ("gray", result.gray),
            ("alpha", result.alpha),
            ("sixteen_bit", result.sixteen_bit),
        ):
            if flag and result.source not in self.info[key]:
                self.info[key].append(result.source)

    def finish(self) -> dict:
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.final)
        self.info["sha256"] = sha256_file(self.final)
        self.info["bytes"] = os.path.getsize(self.final)
        _write_json(self.record_path, self.info)
        return self.info

    def abort(self) -> None:
        """An unfinished shard after an error or Ctrl-C: close and delete its temp file."""
        self.writer.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _manifest(config: PrepareConfig, plan: Plan, infos: list[dict]) -> dict:
    skipped = {s["path"]: s["reason"] for s in plan.skipped}
    union = {"gray": set(), "alpha": set(), "sixteen_bit": set()}
    for info in infos:
        skipped.update(info["skipped"])
        for key in union:
            union[key].update(info[key])
    return {
        "format": MANIFEST_FORMAT,
        "config": _config_dict(config),
        "paired": config.paired,
        "shards": [{k: info[k] for k in ("file", "records", "sha256", "bytes")} for info in infos],
        "total_records": sum(info["records"] for info in infos),
        "skipped": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "gray_promoted_to_rgb": len(union["gray"]),
        "alpha_dropped": len(union["alpha"]),
        "sixteen_bit_images": len(union["sixteen_bit"]),
    }


def prepare(
    config: PrepareConfig,
    output: str,
    workers: int = 1,
    overwrite: bool = False,
    pause_after_shard: float = 0.0,
    progress: bool = True,
) -> dict:
    """Writes shards and manifest.json into `output`; returns the manifest."""
    from tqdm import tqdm

    plan = make_plan(config)
    os.makedirs(output, exist_ok=True)
    n = len(plan.shard_sizes)
    done = _complete_shards(output, plan, overwrite)
    todo = [s for s in plan.segments if s.shard not in done]
    if done:
        logging.info("resuming: %d of %d shards already complete", len(done), n)
    remaining = {}
    for s in todo:
        remaining[s.shard] = remaining.get(s.shard, 0) + 1
    infos = dict(done)
    bar = tqdm(
        total=sum(plan.shard_sizes[k] for k in remaining),
        unit="crop",
        disable=not progress,
        file=sys.stderr,
        desc="prepare",
    )
    # segments in plan order; with workers, at most IN_FLIGHT_PER_WORKER each handed out and unwritten
    results = ordered_map(process_segment, todo, workers)
    writer = None
    try:
        for result in results:
            if writer is None:
                writer = _ShardWriter(output, result.shard, n)
            writer.add(result)
            bar.update(result.planned)
            remaining[result.shard] -= 1
            if remaining[result.shard] == 0:
                infos[result.shard] = writer.finish()
                writer = None
                if pause_after_shard:
                    time.sleep(pause_after_shard)
            del result
    except WorkerError as e:
        if e.details:
            logging.error("worker traceback:\n%s", e.details.rstrip())
        where = f"{todo[e.index].source}: " if e.index is not None else ""
        raise PrepareError(f"{where}{e.reason}; finished shards are kept: rerun to resume") from None
    finally:
        results.close()  # stops the workers (at once when something went wrong)
        bar.close()
        if writer is not None:
            writer.abort()
    manifest = _manifest(config, plan, [infos[k] for k in range(n)])
    _write_json(os.path.join(output, MANIFEST_NAME), manifest)
    return manifest


# ----------------------------------------------------------------------------- command line


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_multi_string("input", [], "Folder of images (repeatable).", flag_values=fv)
    flags.DEFINE_string("output", None, "Folder for the shards and manifest.json.", flag_values=fv)
    flags.DEFINE_string("gt", "", "Paired mode: folder of ground-truth images.", flag_values=fv)
    flags.DEFINE_string(
        "lq", "", "Paired mode: folder of low-quality images, same names as --gt.", flag_values=fv
    )
    flags.DEFINE_integer("scale", 4, "Paired mode: GT size / LQ size.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("crop", 400, "Sub-image size (0: whole images).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("step", 200, "Sub-image stride.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "thresh",
        0,
        "A leftover border wider than this gets one more crop flush with the edge.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "multiscale",
        False,
        "Also crop Lanczos x0.75, x0.5, x1/3 and shortest-edge-400 copies.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_shards",
        0,
        f"Shards (0: one per {DEFAULT_CROPS_PER_SHARD} crops).",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "workers", 1, "Worker processes (the output does not depend on it).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_boolean(
        "overwrite", False, "Delete shards of a different earlier run in --output.", flag_values=fv
    )
    flags.DEFINE_float(
        "pause_after_shard",
        0.0,
        "Seconds to sleep after each shard (for resumability tests).",
        lower_bound=0.0,
        flag_values=fv,
    )


def run(fv: flags.FlagValues) -> int:
    if not fv.output:
        print("real-esrgan-tf prepare: --output is required", file=sys.stderr)
        return 2
    if bool(fv.gt) != bool(fv.lq) or (fv.gt and fv.input):
        print(
            "real-esrgan-tf prepare: give either --input DIR... or both --gt DIR and --lq DIR",
            file=sys.stderr,
        )
        return 2
    config = PrepareConfig(
        inputs=tuple(os.path.abspath(d) for d in fv.input),  # the same run from any working folder
        gt=os.path.abspath(fv.gt) if fv.gt else "",
        lq=os.path.abspath(fv.lq) if fv.lq else "",
        scale=fv.scale if fv.gt else 1,
        crop=fv.crop,
        step=fv.step,
        thresh=fv.thresh,
        multiscale=fv.multiscale,
        num_shards=fv.num_shards,
    )
    start = time.time()
    try:
        manifest = prepare(
            config,
            fv.output,
            workers=fv.workers,
            overwrite=fv.overwrite,
            pause_after_shard=fv.pause_after_shard,
        )
    except PrepareError as e:
        print(f"real-esrgan-tf prepare: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "real-esrgan-tf prepare: interrupted; finished shards are kept: rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    for s in manifest["skipped"]:
        logging.warning("skipped %s: %s", s["path"], s["reason"])
    logging.info(
        "%d records in %d shards (%d files skipped, %d gray promoted, %d alpha dropped) in %.1f s -> %s",
        manifest["total_records"],
        len(manifest["shards"]),
        len(manifest["skipped"]),
        manifest["gray_promoted_to_rgb"],
        manifest["alpha_dropped"],
        time.time() - start,
        os.path.join(fv.output, MANIFEST_NAME),
    )
    # The shards hold every usable image; the exit code still says that some input was not used.
    return 1 if manifest["skipped"] else 0
