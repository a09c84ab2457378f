"""Synthetic test clips built with PyAV: moving pattern, sine tone, optional subtitles, chapters, tags."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def pattern(i: int, height: int, width: int) -> np.ndarray:
    """Frame i: ramps plus a soft bar sweeping across (smooth like camera footage, so that 4:2:0 chroma
    subsampling costs little and the PSNR checks measure the pipeline, not the synthetic edges)."""
    img = np.zeros((height, width, 3), np.float64)
    img[..., 0] = np.arange(width)[None] * 200 / max(width - 1, 1) + 20
    img[..., 1] = np.arange(height)[:, None] * 200 / max(height - 1, 1) + 20
    centre = (i * 3) % width
    img[..., 2] = 30 + 190 * np.exp(-(((np.arange(width) - centre) / (width / 10)) ** 2))[None]
    return np.round(img).astype(np.uint8)


def make_clip(
    path: str,
    *,
    frames: int = 12,
    fps: int = 12,
    size=(64, 48),
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    time_base: Fraction = Fraction(1, 1000),
    durations=None,
    rotate: int | None = None,
    audio: bool = True,
    subtitle: bool = False,
    chapters: bool = False,
    title: str | None = "synthetic clip",
    colour=(1, 1, 1, 1),
    offset: int = 0,
) -> list[int]:
    """Writes a clip and returns its video PTS list (in `time_base`).

    durations: per-frame durations in `time_base` units cycled over the frames (a VFR clip); default 1/fps.
    colour: (matrix, range, primaries, transfer) AVCOL_* tags.
    offset: the first video PTS (the audio starts at 0): a stream that starts late, as in MPEG-TS.
    """
    width, height = size
    step = round(1 / (fps * time_base))
    durations = durations or [step]
    out = av.open(path, "w")
    if title:
        out.metadata["title"] = title
    v = out.add_stream(codec, rate=fps)
    v.width, v.height, v.pix_fmt = width, height, pix_fmt
    v.time_base = v.codec_context.time_base = time_base
    cc = v.codec_context
    cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = colour
    if rotate is not None:
        v.set_display_rotation(rotate)
    a = None
    if audio:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    s = None
    if subtitle:
        s = out.add_mux_stream("subrip" if path.endswith(".mkv") else "mov_text")
        s.time_base = Fraction(1, 1000)
        s.metadata["language"] = "eng"
        s.disposition = av.stream.Disposition.forced
    if chapters:
        half = Fraction(frames, 2 * fps)
        out.set_chapters(
            [
                {
                    "id": 1,
                    "start": 0,
                    "end": int(half * 1000),
                    "time_base": Fraction(1, 1000),
                    "metadata": {"title": "first"},
                },
                {
                    "id": 2,
                    "start": int(half * 1000),
                    "end": int(Fraction(frames, fps) * 1000),
                    "time_base": Fraction(1, 1000),
                    "metadata": {"title": "second"},
                },
            ]
        )
    pts, t = [], offset
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(pattern(i, height, width), "rgb24").reformat(
            format=pix_fmt, dst_colorspace=1 if colour[0] == 1 else 5, dst_color_range=colour[1] or 1
        )
        frame.pts, frame.time_base = t, time_base
        frame.duration = durations[i % len(durations)]
        pts.append(t)
        t += durations[i % len(durations)]
        out.mux(v.encode(frame))
    out.mux(v.encode())
    if a is not None:
        rate = 16000
        seconds = float(t * time_base)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)[
            None
        ]
        for k in range(0, tone.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, k : k + 1024]), format="fltp", layout="mono"
            )
            af.sample_rate, af.pts = rate, k
            out.mux(a.encode(af))
        out.mux(a.encode())
    if s is not None:
        text = b"Hello" if path.endswith(".mkv") else b"\x00\x05Hello"
        p = av.Packet(text)
        p.stream, p.time_base = s, s.time_base
        p.pts = p.dts = 100
        p.duration = 400
        out.mux(p)
    out.close()
    return pts
