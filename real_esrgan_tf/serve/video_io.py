"""Video containers through PyAV: probing, RGB <-> coded frames, segment files and the final mux.

The picture is decoded to RGB (8-bit -> uint8 rgb24, deeper -> uint16 rgb48le), upscaled elsewhere and
encoded back with the input's colour matrix, range, primaries and transfer. Everything else (audio,
subtitles, chapters, container tags, the display matrix) is copied without re-encoding in `mux_output`.

Segment files and the final mux are in `video_mux`.
"""

from __future__ import annotations

import dataclasses
import io
import os
from fractions import Fraction

import av
import numpy as np

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov"}
CODECS = ("libx264", "libx265", "libsvtav1", "ffv1")
CODEC_IDS = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1", "ffv1": "ffv1"}
# AVCOL_SPC_* (frame/stream tag) -> SWS_CS_* (swscale matrix); unspecified follows FFmpeg's BT.601 default.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_RANGE_MPEG, _RANGE_JPEG = 1, 2


class VideoError(Exception):
    """A video that cannot be read or written; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Colour:
    """The colour description of the picture (AVCOL_* codes): kept from input to output."""

    space: int = 2  # matrix; 2 = unspecified
    range: int = 0  # 1 = limited (tv), 2 = full (pc), 0 = unspecified
    primaries: int = 2
    transfer: int = 2

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        return cls(
            int(frame.colorspace), int(frame.color_range), int(frame.color_primaries), int(frame.color_trc)
        )


@dataclasses.dataclass(frozen=True)
class EncodeSettings:
    """How the upscaled picture is encoded; everything that changes the encoded bytes."""

    codec: str = "libx264"
    crf: int | None = None  # None: the encoder's default
    preset: str | None = None
    pix_fmt: str | None = None  # None: the input's family (chroma layout, bit depth)
    fps: Fraction | None = None  # None: keep every frame and its timestamp
    start: float = 0.0  # seconds from the first video frame
    end: float | None = None
    batch: int = 4
    segment_frames: int = 240

    def __post_init__(self):
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}; got {self.codec!r}")
        if self.batch < 1 or self.segment_frames < 1:
            raise ValueError("batch and segment_frames must be >= 1")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")


def container_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in CONTAINERS:
        raise VideoError(
            path, f"unknown output extension {ext or '(none)'!r}; use one of {', '.join(CONTAINERS)}"
        )
    return CONTAINERS[ext]


def format_codecs(fmt: str) -> set[str]:
    with av.open(io.BytesIO(), "w", format=fmt) as probe:
        return set(probe.supported_codecs)


def _is_deep(pix_fmt: str) -> bool:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8


def rgb_format(pix_fmt: str) -> str:
    """The RGB layout a frame of `pix_fmt` is upscaled in: rgb24 (uint8) or rgb48le (uint16) when deeper."""
    return "rgb48le" if _is_deep(pix_fmt) else "rgb24"


def _family(pix_fmt: str) -> tuple[bool, int, int, bool]:
    """(rgb, chroma x shift, chroma y shift, deep) of a pixel format."""
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    comps = fmt.components
    rgb = pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "x2rgb"))
    chroma = [c for c in comps if c.is_chroma]
    sx = sy = 0
    if chroma and not rgb:
        sx = {fmt.width: 0, (fmt.width + 1) // 2: 1, (fmt.width + 3) // 4: 2}.get(chroma[0].width, 0)
        sy = {fmt.height: 0, (fmt.height + 1) // 2: 1}.get(chroma[0].height, 0)
    return rgb, sx, sy, _is_deep(pix_fmt)


def choose_pix_fmt(input_pix_fmt: str, codec: str) -> str:
    """The encoder pixel format closest to the input's: same chroma layout and depth if the codec has it."""
    supported = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    if input_pix_fmt in supported:
        return input_pix_fmt
    want = _family(input_pix_fmt)
    candidates = [f for f in supported if not av.VideoFormat(f).has_palette]
    ranked = sorted(candidates, key=lambda f: _score(_family(f), want, f))
    return ranked[0]


def _score(have, want, name) -> tuple:
    rgb, sx, sy, deep = have
    # Keep depth first (10-bit stays 10-bit), then chroma layout; plain yuv before exotic layouts.
    return (
        deep != want[3],
        rgb != want[0],
        abs(sx - want[1]) + abs(sy - want[2]),
        not name.startswith(("yuv", "gbrp")),
        len(name),
        name,
    )


@dataclasses.dataclass
class VideoInfo:
    """What `probe` learned about an input: its picture, timing and the streams that ride along."""

    path: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    rate: Fraction | None
    frames: int  # container's count or an estimate from the duration; 0 if unknown
    duration: float | None
    stream_index: int


def probe(path: str) -> VideoInfo:
    """Opens `path` and describes its first video stream. Raises VideoError if it is not a video."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(path, f"not a readable video ({exc.__class__.__name__}: {exc})") from None
    with container:
        stream = video_stream(container, path)
        cc = stream.codec_context
        if not cc.width or not cc.height or cc.format is None:
            raise VideoError(path, "the video stream has no picture size or pixel format (undecodable)")
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        frames = stream.frames or (round(duration * rate) if duration and rate else 0)
        return VideoInfo(
            path,
            cc.width,
            cc.height,
            cc.format.name,
            stream.time_base,
            rate,
            int(frames),
            duration,
            stream.index,
        )


def video_stream(container, path: str):
    """The first video stream that is a picture sequence (not an attached cover image)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoError(path, "no video stream")


def frame_to_rgb(frame: av.VideoFrame, rgb_fmt: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A decoded frame -> (H, W, 3) uint8/uint16 RGB, converted with the frame's own matrix and range.

    size: (width, height) to scale to (a stream whose size changes mid-way is kept at its first size).
    """
    colour = Colour.of(frame)
    width, height = size or (frame.width, frame.height)
    if _family(frame.format.name)[0]:
        out = frame.reformat(width=width, height=height, format=rgb_fmt)
    else:
        out = frame.reformat(
            width=width,
            height=height,
            format=rgb_fmt,
            src_colorspace=_SWS_MATRIX.get(colour.space, 5),
            dst_colorspace=_SWS_MATRIX.get(colour.space, 5),
            src_color_range=colour.range or _RANGE_MPEG,
            dst_color_range=_RANGE_JPEG,
        )
    return out.to_ndarray()


def rgb_to_frame(pixels: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """(H, W, 3) uint8/uint16 RGB -> a frame of `pix_fmt` encoded with the input's matrix and range."""
    rgb = "rgb48le" if pixels.dtype == np.uint16 else "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=rgb)
    if _family(pix_fmt)[0]:
        return frame.reformat(format=pix_fmt)
    matrix = _SWS_MATRIX.get(colour.space, 5)
    return frame.reformat(
        format=pix_fmt,
        src_colorspace=matrix,
        dst_colorspace=matrix,
        src_color_range=_RANGE_JPEG,
        dst_color_range=colour.range or _RANGE_MPEG,
    )


def encoder_options(settings: EncodeSettings) -> dict[str, str]:
    options = {}
    if settings.crf is not None and settings.codec != "ffv1":
        options["crf"] = str(settings.crf)
    if settings.preset is not None and settings.codec != "ffv1":
        options["preset"] = str(settings.preset)
    if settings.codec == "ffv1":
        options.update(level="3", slicecrc="1")
    if settings.codec == "libx265":
        options["x265-params"] = "log-level=error"
    return options


def open_encoder(
    container,
    settings: EncodeSettings,
    width: int,
    height: int,
    pix_fmt: str,
    time_base: Fraction,
    rate: Fraction | None,
    colour: Colour,
):
    """Adds an encoder stream to `container` (output side); the same arguments give the same extradata."""
    stream = container.add_stream(
        settings.codec, rate=rate or Fraction(25), options=encoder_options(settings)
    )
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = time_base
    cc = stream.codec_context
    cc.time_base = time_base
    cc.thread_count = 0
    cc.color_range = colour.range or (0 if _family(pix_fmt)[0] else _RANGE_MPEG)
    cc.colorspace, cc.color_primaries, cc.color_trc = colour.space, colour.primaries, colour.transfer
    cc.flags |= av.codec.context.Flags.global_header | av.codec.context.Flags.bitexact
    return stream


def check_output(output: str, codec: str, pix_fmt: str | None = None) -> str:
    """The output's container format, after checking it can hold `codec` video in `pix_fmt`."""
    fmt = container_format(output)
    if CODEC_IDS[codec] not in format_codecs(fmt):
        raise VideoError(output, f"the {fmt} container cannot hold {codec} video (use .mkv)")
    formats = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    if pix_fmt is not None and pix_fmt not in formats:
        takes = ", ".join(formats)
        raise VideoError(output, f"{codec} cannot encode pixel format {pix_fmt!r} (it takes {takes})")
    return fmt


def first_time(container, stream) -> float:
    """Seconds of the video stream's start; --start/--end count from it."""
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


