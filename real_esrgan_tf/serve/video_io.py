"""Video containers through PyAV: probing, RGB <-> coded frames, segment files and the final mux.

The picture is decoded to RGB (8-bit -> uint8 rgb24, deeper -> uint16 rgb48le), upscaled elsewhere and
encoded back with the input's colour matrix, range, primaries and transfer. Everything else (audio,
subtitles, chapters, container tags, the display matrix) is copied without re-encoding in `mux_output`.

Encoded video is kept between runs as *segment files*: a small header plus the encoder's packets with their
exact timestamps. They are concatenated without re-encoding at the end (each segment starts with a fresh
encoder, so a keyframe, and the same settings give the same codec extradata, which is checked).
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import io
import json
import os
import struct
from fractions import Fraction

import av
import numpy as np

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov"}
CODECS = ("libx264", "libx265", "libsvtav1", "ffv1")
CODEC_IDS = {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1", "ffv1": "ffv1"}
# Tags that the muxer writes itself (or that describe the old file) and must not be copied over.
_OWN_TAGS = {
    "encoder",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "duration",
    "creation_time",
    "rotate",
    "bps",
    "number_of_frames",
    "number_of_bytes",
    "_statistics_tags",
    "_statistics_writing_app",
    "_statistics_writing_date_utc",
    "handler_name",
    "vendor_id",
}
# AVCOL_SPC_* (frame/stream tag) -> SWS_CS_* (swscale matrix); unspecified follows FFmpeg's BT.601 default.
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_RANGE_MPEG, _RANGE_JPEG = 1, 2
_NOPTS = -(1 << 63)
_SEGMENT_MAGIC = b"RESRVSEG1\n"
_RECORD = struct.Struct("<qqqBI")  # pts, dts, duration, keyframe, size


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


def _format_codecs(fmt: str) -> set[str]:
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


# ---------------------------------------------------------------------------- segment files
class SegmentWriter:
    """Encodes frames into one segment file (written to `path` + '.tmp', renamed by `close`)."""

    def __init__(
        self,
        path: str,
        settings: EncodeSettings,
        width: int,
        height: int,
        pix_fmt: str,
        time_base: Fraction,
        rate: Fraction | None,
        colour: Colour,
    ):
        self.path = path
        self._holder = av.open(io.BytesIO(), "w", format="nut")
        self._stream = open_encoder(self._holder, settings, width, height, pix_fmt, time_base, rate, colour)
        self._pix_fmt, self._colour, self._time_base = pix_fmt, colour, time_base
        self._file = open(path + ".tmp", "wb")
        self._header_written = False

    def _write_header(self) -> None:
        extradata = self._stream.codec_context.extradata or b""
        header = json.dumps(
            {
                "extradata": base64.b64encode(extradata).decode(),
                "time_base": [self._time_base.numerator, self._time_base.denominator],
            }
        ).encode()
        self._file.write(_SEGMENT_MAGIC + struct.pack("<I", len(header)) + header)
        self._header_written = True

    def _write(self, packets) -> None:
        for p in packets:
            if not self._header_written:
                self._write_header()
            data = bytes(p)
            pts = _NOPTS if p.pts is None else p.pts
            dts = _NOPTS if p.dts is None else p.dts
            self._file.write(_RECORD.pack(pts, dts, p.duration or 0, int(p.is_keyframe), len(data)) + data)

    def encode(self, pixels: np.ndarray, pts: int, duration: int) -> None:
        frame = rgb_to_frame(pixels, self._pix_fmt, self._colour)
        frame.pts, frame.duration, frame.time_base = pts, duration, self._time_base
        self._write(self._stream.encode(frame))

    def close(self) -> None:
        """Flushes the encoder and publishes the segment (atomic rename)."""
        self._write(self._stream.encode(None))
        if not self._header_written:
            self._write_header()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._holder.close()
        os.replace(self.path + ".tmp", self.path)

    def abort(self) -> None:
        self._file.close()
        try:
            self._holder.close()
        except av.FFmpegError:
            pass
        if os.path.exists(self.path + ".tmp"):
            os.remove(self.path + ".tmp")


def read_segment(path: str):
    """Yields (header dict, then) packets as (pts, dts, duration, keyframe, bytes) from a segment file."""
    with open(path, "rb") as f:
        if f.read(len(_SEGMENT_MAGIC)) != _SEGMENT_MAGIC:
            raise VideoError(path, "not a segment file")
        (size,) = struct.unpack("<I", f.read(4))
        yield json.loads(f.read(size))
        while head := f.read(_RECORD.size):
            pts, dts, duration, key, size = _RECORD.unpack(head)
            yield (
                None if pts == _NOPTS else pts,
                None if dts == _NOPTS else dts,
                duration,
                bool(key),
                f.read(size),
            )


# ---------------------------------------------------------------------------- final mux
def _tags(metadata) -> dict[str, str]:
    return {
        k: v
        for k, v in metadata.items()
        if k.lower() not in _OWN_TAGS and not k.upper().startswith("DURATION")
    }


def copy_streams(container, out_format: str, path: str) -> tuple[list, list[str]]:
    """Streams copied packet for packet: audio (must fit the container), subtitles (else dropped, warned)."""
    supported = _format_codecs(out_format)
    keep, warnings = [], []
    for stream in container.streams:
        name = stream.codec_context.name if stream.codec_context else None
        if stream.type == "audio":
            if name not in supported:
                raise VideoError(
                    path,
                    f"audio stream #{stream.index} ({name}) cannot be copied into {out_format}; use .mkv",
                )
            keep.append(stream)
        elif stream.type == "subtitle":
            if name in supported:
                keep.append(stream)
            else:
                warnings.append(
                    f"{path}: subtitle stream #{stream.index} ({name}) cannot be stored in {out_format}; "
                    "dropped (use .mkv to keep it)"
                )
    return keep, warnings


def check_output(output: str, codec: str, pix_fmt: str | None = None) -> str:
    """The output's container format, after checking it can hold `codec` video in `pix_fmt`."""
    fmt = container_format(output)
    if CODEC_IDS[codec] not in _format_codecs(fmt):
        raise VideoError(output, f"the {fmt} container cannot hold {codec} video (use .mkv)")
    formats = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    if pix_fmt is not None and pix_fmt not in formats:
        takes = ", ".join(formats)
        raise VideoError(output, f"{codec} cannot encode pixel format {pix_fmt!r} (it takes {takes})")
    return fmt


def mux_output(
    input_path: str,
    segments: list[str],
    tmp_path: str,
    out_format: str,
    settings: EncodeSettings,
    size: tuple[int, int],
    pix_fmt: str,
    rate: Fraction | None,
    colour: Colour,
    display_matrix: list[int] | None,
    shift: float,
    end: float | None,
) -> list[str]:
    """Writes the final file: segment packets + the input's audio/subtitles, tags, chapters. Returns warnings.

    shift: seconds subtracted from every timestamp (the first kept frame's time with --start, else 0).
    end: absolute time (seconds) where copied streams stop, None for the whole file.
    """
    with (
        av.open(input_path) as source,
        av.open(tmp_path, "w", format=out_format, options={"fflags": "+bitexact"}) as out,
    ):
        vin = video_stream(source, input_path)
        copies, warnings = copy_streams(source, out_format, input_path)
        out.metadata.update(_tags(source.metadata))
        first = read_segment(segments[0])
        header = next(first)
        first.close()
        time_base = Fraction(*header["time_base"])
        with av.open(io.BytesIO(), "w", format="nut") as holder:
            template = open_encoder(holder, settings, size[0], size[1], pix_fmt, time_base, rate, colour)
            holder.start_encoding()
            if (template.codec_context.extradata or b"") != base64.b64decode(header["extradata"]):
                raise VideoError(segments[0], "segment was encoded with other settings (extradata differs)")
            vout = out.add_stream_from_template(template)
        vout.time_base = time_base
        vout.metadata.update(_tags(vin.metadata))
        if display_matrix is not None:
            vout.set_display_matrix(display_matrix)
        outs = {}
        for stream in copies:
            outs[stream.index] = out.add_stream_from_template(stream)
            outs[stream.index].time_base = stream.time_base
            outs[stream.index].metadata.update(_tags(stream.metadata))
        for target, src in [(vout, vin)] + [(outs[s.index], s) for s in copies]:
            try:
                target.disposition = src.disposition
            except (AttributeError, ValueError):
                pass
        chapters = _shift_chapters(source.chapters(), shift, end)
        if chapters and out_format != "webm":
            out.set_chapters(chapters)
        video = _segment_packets(segments, vout, time_base)
        others = _copied_packets(source, copies, outs, shift, end)
        for packet in heapq.merge(video, others, key=lambda item: item[0]):
            out.mux(packet[2])
    return warnings


def _segment_packets(segments, stream, time_base):
    last_dts = None
    for n, path in enumerate(segments):
        reader = read_segment(path)
        next(reader)
        for pts, dts, duration, key, data in reader:
            if dts is not None and last_dts is not None and dts <= last_dts:
                dts = last_dts + 1  # B-frame delay of a fresh encoder meeting the previous segment's tail
            last_dts = dts if dts is not None else last_dts
            packet = av.Packet(data)
            packet.pts, packet.dts, packet.duration, packet.is_keyframe = pts, dts, duration, key
            packet.time_base, packet.stream = time_base, stream
            when = (dts if dts is not None else pts) * time_base
            yield when, (0, n), packet


def _copied_packets(source, copies, outs, shift: float, end: float | None):
    if not copies:
        return  # (demux of no streams would read them all)
    for packet in source.demux(copies):
        if packet.size == 0 and packet.pts is None:
            continue  # demuxer's end-of-stream marker
        tb = packet.time_base
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None:
            continue
        seconds = float(stamp * tb)
        if (shift and seconds < shift) or (end is not None and seconds >= end):  # no range: keep priming too
            continue
        offset = round(shift / tb) if shift else 0
        if packet.pts is not None:
            packet.pts -= offset
        if packet.dts is not None:
            packet.dts -= offset
        packet.stream = outs[packet.stream.index]
        when = (packet.dts if packet.dts is not None else packet.pts) * tb
        yield when, (1, 0), packet


def _first_time(container, stream) -> float:
    """Seconds of the video stream's start; --start/--end count from it."""
    if stream.start_time is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def _shift_chapters(chapters, start: float, end: float | None) -> list[dict]:
    out = []
    for ch in chapters:
        tb = ch["time_base"]
        s, e = float(ch["start"] * tb), float(ch["end"] * tb)
        if e <= start or (end is not None and s >= end):
            continue
        s, e = max(s, start) - start, (min(e, end) if end is not None else e) - start
        out.append({**ch, "start": round(s / tb), "end": round(e / tb), "metadata": dict(ch["metadata"])})
    return out
