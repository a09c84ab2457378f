"""Upscales a video: decode -> batched upscale -> encode in overlapping threads, in resumable segments.

The official Real-ESRGAN video script pipes single frames through an external ffmpeg and re-encodes the
sound; here every frame keeps its presentation timestamp, audio/subtitles are copied packet for packet,
frames of equal size run as one batch, and finished segments survive a crash (the next run resumes after
the last one).

Threads: one decoder, one upscale worker per upscaler (one per accelerator), and the encoder on the calling
thread. Queues between them hold at most `queue_batches` batches, so memory stays bounded for any length.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from real_esrgan_tf.serve import video_io, video_mux
from real_esrgan_tf.serve.video_io import Colour, EncodeSettings, VideoError

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mkv",
    ".webm",
    ".mov",
    ".avi",
    ".ts",
    ".m2ts",
    ".mts",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".3gp",
    ".ogv",
)


class FrameUpscaler(Protocol):
    """What the pipeline needs from a model: the result size and a batch call."""

    def output_size(self, height: int, width: int) -> tuple[int, int]: ...

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8|uint16 -> (N, H', W', 3) of the same dtype."""
        ...


@dataclasses.dataclass
class VideoResult:
    output: str
    frames: int  # frames in the output
    upscaled: int  # frames upscaled by this run (fewer than `frames` after a resume)
    resumed_segments: int
    seconds: float
    peak_frames_in_flight: int  # decoded but not yet encoded: the memory bound at work
    warnings: list[str]


@dataclasses.dataclass
class _Batch:
    seq: int
    segment: int
    index: list[int]  # output frame numbers
    pts: list[int]
    duration: list[int]
    pixels: np.ndarray | None  # (N, H, W, 3); None for frames of a finished segment (skipped)
    last_of_segment: bool


_END = object()


def list_videos(folder: str) -> list[str]:
    """Video files (by extension) directly in `folder`, sorted; hidden files are skipped."""
    return sorted(
        os.path.join(folder, n)
        for n in os.listdir(folder)
        if not n.startswith(".")
        and n.lower().endswith(VIDEO_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, n))
    )


def work_dir_for(output: str) -> str:
    """The folder next to the output that holds finished segments between runs."""
    head, tail = os.path.split(os.path.abspath(output))
    return os.path.join(head, f".{tail}.parts")


def upscale_video(
    input_path: str,
    output_path: str,
    upscalers: Sequence[FrameUpscaler],
    settings: EncodeSettings | None = None,
    *,
    fingerprint: str = "",
    progress: bool = False,
    queue_batches: int = 2,
    keep_work: bool = False,
) -> VideoResult:
    """Upscales `input_path` into `output_path` (written atomically; the input is only read).

    Args:
      upscalers: one per device; batches are spread over them and put back in order.
      fingerprint: identifies the model and its options; a change discards finished segments.
      queue_batches: bound of each queue between the threads.
    Raises:
      VideoError: the input is not a usable video, or the output cannot be written.
    """
    began = time.perf_counter()
    settings = settings or EncodeSettings()
    if not upscalers:
        raise ValueError("need at least one upscaler")
    if queue_batches < 1:
        raise ValueError("queue_batches must be >= 1 (0 would make the queues unbounded)")
    both = os.path.exists(input_path) and os.path.exists(output_path)
    if both and os.path.samefile(input_path, output_path):
        raise VideoError(output_path, "output is the input file")
    out_format = video_io.check_output(output_path, settings.codec, settings.pix_fmt)
    info = video_io.probe(input_path)
    with av.open(input_path) as source:
        _, warnings = video_mux.copy_streams(source, out_format, input_path)
    pix_fmt = settings.pix_fmt or video_io.choose_pix_fmt(info.pix_fmt, settings.codec)
    try:
        work = _prepare_work(input_path, output_path, settings, fingerprint, pix_fmt)
    except OSError as exc:
        raise VideoError(output_path, f"cannot write next to the output ({exc.strerror or exc})") from None
    done = {int(os.path.basename(p)[4:10]) for p in glob.glob(os.path.join(work, "seg_*.seg"))}
    run = _Run(input_path, settings, upscalers, work, done, pix_fmt, queue_batches, info, progress)
    run.execute()
    if run.frames == 0:
        raise VideoError(input_path, "no video frames in the chosen range")
    segments = [_segment_path(work, g) for g in range(run.segments)]
    head, tail = os.path.split(os.path.abspath(output_path))
    root, ext = os.path.splitext(tail)
    tmp = os.path.join(head, f".{root}.tmp{ext}")
    try:
        warnings += video_mux.mux_output(
            input_path,
            segments,
            tmp,
            out_format,
            settings,
            run.out_size,
            pix_fmt,
            run.rate,
            run.colour,
            run.display_matrix,
            run.shift,
            run.end,
        )
        os.replace(tmp, output_path)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(output_path, f"cannot write the output ({exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return VideoResult(
        output_path,
        run.frames,
        run.upscaled,
        len(done & set(range(run.segments))),
        time.perf_counter() - began,
        run.peak_in_flight,
        warnings,
    )


def _segment_path(work: str, g: int) -> str:
    return os.path.join(work, f"seg_{g:06d}.seg")


def _prepare_work(input_path, output_path, settings, fingerprint, pix_fmt) -> str:
    """Creates (or reuses) the work folder; finished segments of other inputs/settings are discarded."""
    work = work_dir_for(output_path)
    st = os.stat(input_path)
    manifest = {
        "input": os.path.abspath(input_path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "settings": {k: str(v) for k, v in dataclasses.asdict(settings).items()},
        "pix_fmt": pix_fmt,
        "model": hashlib.sha256(fingerprint.encode()).hexdigest(),
        "av": av.__version__,
    }
    path = os.path.join(work, "manifest.json")
    if os.path.isdir(work):
        try:
            with open(path) as f:
                same = json.load(f) == manifest
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            json.dump(manifest, f)
        os.replace(path + ".tmp", path)
    for stale in glob.glob(os.path.join(work, "*.tmp")):
        os.remove(stale)  # a segment that a killed run was writing
    return work


class _Run:
    """One pass over the input: decoder thread -> upscale workers -> encoder (calling thread)."""

    def __init__(
        self, path, settings: EncodeSettings, upscalers, work, done, pix_fmt, queue_batches, info, progress
    ):
        self.path, self.settings, self.upscalers, self.work, self.done = path, settings, upscalers, work, done
        self.pix_fmt, self.info, self.progress = pix_fmt, info, progress
        # 10-bit in or out: upscale in 16-bit RGB so no depth is lost on either side.
        deep = video_io.rgb_format(pix_fmt) == "rgb48le" or video_io.rgb_format(info.pix_fmt) == "rgb48le"
        self.rgb = "rgb48le" if deep else "rgb24"
        self.to_workers: queue.Queue = queue.Queue(queue_batches)
        self.to_encoder: queue.Queue = queue.Queue(queue_batches)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.frames = self.upscaled = self.segments = 0
        self.in_flight = self.peak_in_flight = 0
        self._lock = threading.Lock()
        self.colour = Colour()
        self.display_matrix = None
        self.out_size = (0, 0)
        self.rate = settings.fps or info.rate
        self.time_base = Fraction(1) / settings.fps if settings.fps else info.time_base
        self.shift = 0.0  # seconds cut from the front (--start): every stream moves by it
        self.end = None  # absolute seconds where --end cuts the copied streams
        self._ready = threading.Event()  # first frame seen: colour, size and display matrix known

    # ---------------------------------------------------------------- threads
    def execute(self) -> None:
        threads = [threading.Thread(target=self._guard, args=(self._decode,), daemon=True)]
        threads += [
            threading.Thread(target=self._guard, args=(self._work, u), daemon=True) for u in self.upscalers
        ]
        for t in threads:
            t.start()
        try:
            self._guard(self._encode)
        finally:
            self.stop.set()
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            with self._lock:
                self.errors.append(exc)
            self.stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set() or not q.empty():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    break
        return _END

    # ---------------------------------------------------------------- decoder
    def _decode(self) -> None:
        seq = 0
        pending: list = []
        batch, seg_frames = self.settings.batch, self.settings.segment_frames
        for k, frame, pts, duration in self._frames():
            g = k // seg_frames
            if pending and (g != pending[0][0] // seg_frames or len(pending) == batch):
                if not self._put(self.to_workers, self._make_batch(seq, pending, False)):
                    return
                seq += 1
                pending = []
            pending.append((k, frame, pts, duration))
        if pending:
            self._put(self.to_workers, self._make_batch(seq, pending, True))
        for _ in self.upscalers:
            self._put(self.to_workers, _END)

    def _make_batch(self, seq, pending, final) -> _Batch:
        k0 = pending[0][0]
        g = k0 // self.settings.segment_frames
        last = final or (pending[-1][0] + 1) % self.settings.segment_frames == 0
        pixels = None
        if g not in self.done:
            pixels = np.stack(
                [
                    video_io.frame_to_rgb(f, self.rgb, (self.info.width, self.info.height))
                    for _, f, _, _ in pending
                ]
            )
        with self._lock:
            self.in_flight += len(pending)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return _Batch(
            seq, g, [p[0] for p in pending], [p[2] for p in pending], [p[3] for p in pending], pixels, last
        )

    def _frames(self) -> Iterator[tuple[int, av.VideoFrame, int, int]]:
        """(output index, frame, output pts, duration) after the time range and --fps resampling."""
        s = self.settings
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(self.path, f"not a readable video ({exc})") from None
        with container:
            stream = video_io.video_stream(container, self.path)
            stream.thread_type = "AUTO"
            tb = stream.time_base
            t0 = video_io.first_time(container, stream)
            first_pts = None
            if s.end is not None:
                self.end = t0 + s.end
            k = 0
            prev = None  # (frame, pts) for --fps
            last_pts = None
            decoded = 0
            try:
                for frame in container.decode(stream):
                    if self.stop.is_set():
                        return
                    decoded += 1
                    pts = (
                        frame.pts
                        if frame.pts is not None
                        else ((last_pts or 0) + int(round(1 / ((self.info.rate or 25) * tb))))
                    )
                    last_pts = pts
                    seconds = float(pts * tb) - t0
                    if seconds < s.start - 1e-9:
                        continue
                    if s.end is not None and seconds >= s.end - 1e-9:
                        break
                    self._first_frame(frame)
                    if first_pts is None and (s.start or s.fps):  # --fps: frame k is at t0 + k / fps
                        first_pts = pts if s.fps is None else 0
                        self.shift = float(pts * tb) if s.fps is None else t0 + s.start
                    if s.fps is None:
                        duration = frame.duration or int(round(1 / ((self.info.rate or 25) * tb)))
                        yield k, frame, pts - (first_pts or 0), duration
                        k += 1
                        continue
                    slot = round((seconds - s.start) * s.fps)
                    if prev is not None:
                        while k < slot:
                            yield k, prev, k, 1
                            k += 1
                    prev = frame
                    end_seconds = seconds + float((frame.duration or 0) * tb)
                if s.fps is not None and prev is not None:
                    # The last frame lasts until the input's end (or --end): fill those slots as ffmpeg's fps.
                    if s.end is not None:
                        end_seconds = min(end_seconds, s.end)
                    while k < max(round((end_seconds - s.start) * s.fps), 1):
                        yield k, prev, k, 1
                        k += 1
            except av.FFmpegError as exc:
                raise VideoError(
                    self.path, f"undecodable video frame after frame {decoded} ({exc})"
                ) from None
            if decoded == 0:
                raise VideoError(self.path, "no decodable video frames")

    def _first_frame(self, frame) -> None:
        if self._ready.is_set():
            return
        self.colour = Colour.of(frame)
        sd = [bytes(d) for d in frame.side_data if d.type == av.sidedata.sidedata.Type.DISPLAYMATRIX]
        self.display_matrix = list(np.frombuffer(sd[0], "<i4").tolist()) if sd else None
        self._ready.set()

    # ---------------------------------------------------------------- workers
    def _work(self, upscaler: FrameUpscaler) -> None:
        while True:
            item = self._get(self.to_workers)
            if item is _END:
                self._put(self.to_encoder, _END)
                return
            if item.pixels is not None:
                item.pixels = np.asarray(upscaler.upscale_batch(item.pixels))
            if not self._put(self.to_encoder, item):
                return

    # ---------------------------------------------------------------- encoder
    def _encode(self) -> None:
        from tqdm import tqdm

        h, w = self.upscalers[0].output_size(self.info.height, self.info.width)
        self.out_size = (w, h)
        waiting: dict[int, _Batch] = {}
        ends, next_seq = 0, 0
        writer = None
        total = self._expected_frames() or None
        bar = tqdm(total=total, unit="frame", disable=not self.progress, dynamic_ncols=True)
        try:
            while ends < len(self.upscalers):
                item = self._get(self.to_encoder)
                if item is _END:
                    ends += 1
                    if self.stop.is_set():
                        return
                    continue
                waiting[item.seq] = item
                while next_seq in waiting:
                    b = waiting.pop(next_seq)
                    next_seq += 1
                    writer = self._encode_batch(b, writer)
                    bar.update(len(b.index))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            bar.close()
        if waiting:
            raise RuntimeError(f"batches {sorted(waiting)} never reached the encoder")

    def _expected_frames(self) -> int:
        """For the progress bar's ETA: the container's frame count, or the duration times the rate."""
        s, info = self.settings, self.info
        if not s.fps and not s.start and s.end is None and info.frames:
            return info.frames
        rate = s.fps or info.rate
        if not info.duration or not rate:
            return 0
        span = min(info.duration, s.end if s.end is not None else info.duration) - s.start
        return max(round(span * rate), 0)

    def _encode_batch(self, b: _Batch, writer):
        self.segments = b.segment + 1
        self.frames = b.index[-1] + 1
        if b.pixels is not None:
            if b.pixels.shape[1:3] != (self.out_size[1], self.out_size[0]):
                raise RuntimeError(f"upscaler returned {b.pixels.shape[1:3]}, expected {self.out_size[::-1]}")
            if writer is None:
                writer = video_mux.SegmentWriter(
                    _segment_path(self.work, b.segment),
                    self.settings,
                    self.out_size[0],
                    self.out_size[1],
                    self.pix_fmt,
                    self.time_base,
                    self.rate,
                    self.colour,
                )
            for pixels, pts, duration in zip(b.pixels, b.pts, b.duration, strict=True):
                writer.encode(pixels, pts, duration)
            self.upscaled += len(b.index)
        with self._lock:
            self.in_flight -= len(b.index)
        if b.last_of_segment and writer is not None:
            writer.close()
            writer = None
        return writer
