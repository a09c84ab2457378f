"""Segment files and the final mux of the video command.

Encoded video is kept between runs as *segment files*: a small header plus the encoder's packets with their
exact timestamps (no container in between that would round or shift them). They are concatenated without
re-encoding at the end (each segment starts with a fresh encoder, so a keyframe, and the same settings give
the same codec extradata, which is checked), interleaved by time with the input's audio and subtitle packets
copied as they are, under the input's tags, chapters and display matrix.
"""

from __future__ import annotations

import base64
import heapq
import io
import json
import os
import struct
from fractions import Fraction

import av
import numpy as np

from real_esrgan_tf.serve.video_io import (
    Colour,
    EncodeSettings,
    VideoError,
    format_codecs,
    open_encoder,
    rgb_to_frame,
    video_stream,
)

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
_NOPTS = -(1 << 63)
_SEGMENT_MAGIC = b"RESRVSEG1\n"
_RECORD = struct.Struct("<qqqBI")  # pts, dts, duration, keyframe, size


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
    supported = format_codecs(out_format)
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
        if chapters:
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
