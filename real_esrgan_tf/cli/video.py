"""`real-esrgan-tf video`: a video file or a folder of videos through a generator, sound and timing kept."""

from __future__ import annotations

import os
from fractions import Fraction

from absl import flags, logging

from real_esrgan_tf.cli import faces, report, upscale
from real_esrgan_tf.cli.report import UserError

CODECS = ("libx264", "libx265", "libsvtav1", "ffv1")


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "A video file or a folder of videos.", flag_values=fv)
    flags.DEFINE_string("output", None, "The output file (.mp4, .mkv, .webm, .mov: the container), or a "
                        "folder (created if missing; required for a folder input).", flag_values=fv)
    flags.DEFINE_string("suffix", "out", "Names in an output folder: {stem}_{suffix}.{ext}, ext the input's "
                        "(mkv for containers that cannot be written).", flag_values=fv)
    upscale.define_model_flags(fv, default_model="realesr-animevideov3")
    flags.DEFINE_enum("codec", "libx264", list(CODECS), "Video encoder (ffv1 is lossless).", flag_values=fv)
    flags.DEFINE_integer("crf", None, "Constant rate factor (lower = better, bigger); default: the "
                         "encoder's (x264 23, x265 28, SVT-AV1 35). Ignored by ffv1.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_string("preset", None, "Encoder preset (x264/x265: ultrafast..veryslow; SVT-AV1: 0..13).",
                        flag_values=fv)
    flags.DEFINE_string("pix_fmt", None, "Output pixel format; default: the input's family (4:2:0 stays "
                        "4:2:0, 10-bit stays 10-bit).", flag_values=fv)
    flags.DEFINE_string("fps", None, "Resample to a constant frame rate (e.g. 30 or 30000/1001); default: "
                        "keep every frame and its timestamp.", flag_values=fv)
    flags.DEFINE_integer("batch", None, "Frames per forward pass; default 4 with a GPU, 1 on a CPU (where "
                         "batches were measured slower, see BUILD_NOTES).", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("start", 0.0, "Start time in seconds.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("end", None, "End time in seconds (default: the end).", flag_values=fv)
    flags.DEFINE_integer("segment_frames", 240, "Frames per resumable segment (kept in .NAME.parts/ next "
                         "to the output until the file is complete).", lower_bound=1, flag_values=fv)
    faces.define_face_flags(fv)


def _error(message: str) -> None:
    report.error("video", message)


def _warn(message: str) -> None:
    report.warning("video", message)


def _jobs(fv) -> list[tuple[str, str]]:
    """(input, output) pairs for --input/--output."""
    from real_esrgan_tf.serve import video, video_io

    source, target = fv.input, fv.output
    if not source:
        raise UserError("--input is required (a video file or a folder)")
    if not target:
        raise UserError("--output is required (a video file or a folder)")
    if os.path.isfile(source):
        inputs = [source]
    elif os.path.isdir(source):
        inputs = video.list_videos(source)
        if not inputs:
            raise UserError(f"{source}: no video files in the folder")
    else:
        raise UserError(f"{source}: no such file or folder")
    if os.path.isfile(source) and os.path.splitext(target)[1].lower() in video_io.CONTAINERS:
        return [(source, target)]
    if os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"{target}: a folder input needs an output folder")
    try:
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise UserError(f"{target}: cannot create output folder ({e.strerror or e})") from None
    jobs = []
    for path in inputs:
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext.lower() if ext.lower() in video_io.CONTAINERS else ".mkv"
        jobs.append((path, os.path.join(target, f"{stem}_{fv.suffix}{ext}" if fv.suffix else stem + ext)))
    return jobs


class _OnDevice:
    """An Upscaler whose batches run on one accelerator (one replica per GPU)."""

    def __init__(self, upscaler, device: str):
        self.upscaler, self.device = upscaler, device

    def output_size(self, height, width):
        return self.upscaler.output_size(height, width)

    def upscale_batch(self, frames):
        import tensorflow as tf

        with tf.device(self.device):
            return self.upscaler.upscale_batch(frames)


def _upscalers(fv, model, outscale) -> list:
    """One Upscaler per visible GPU (model replicas), else one on the CPU."""
    import keras
    import tensorflow as tf

    from real_esrgan_tf.serve.upscaler import Upscaler

    precision = upscale.resolve_precision_flag(fv, model, "video")

    def make(net):
        return faces.with_faces(fv, Upscaler(  # --face_enhance: GFPGAN on each frame's faces
            net, tile=fv.tile, tile_pad=fv.tile_pad, pre_pad=fv.pre_pad, precision=precision, tta=fv.tta,
            outscale=outscale, jit_compile=fv.xla))

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < 2 or not isinstance(model, keras.Model):
        return [make(model)]
    replicas = []
    for gpu in gpus:
        with tf.device(gpu.name):
            replica = keras.models.clone_model(model)
            replica.set_weights(model.get_weights())
            if getattr(model, "scale", None):
                replica.scale = model.scale
            replicas.append(_OnDevice(make(replica), gpu.name))
    logging.info("spreading batches over %d GPUs", len(replicas))
    return replicas


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _fingerprint(fv) -> str:
    """What makes the upscaled frames: a change discards finished segments of an earlier run."""
    model = fv.model
    if os.path.isfile(model):
        st = os.stat(model)
        model = f"{os.path.abspath(model)}:{st.st_size}:{st.st_mtime_ns}"
    keys = ("outscale", "tile", "tile_pad", "pre_pad", "precision", "tta", "denoise_strength", "wdn_model",
            "xla", "act", "backend") + faces.FINGERPRINT_KEYS
    return repr([model] + [(k, fv[k].value) for k in keys])


def _settings(fv, on_gpu: bool):
    from real_esrgan_tf.serve.video_io import EncodeSettings

    try:
        fps = Fraction(fv.fps) if fv.fps else None
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--fps {fv.fps!r}: not a number or fraction") from None
    if fps is not None and fps <= 0:
        raise UserError("--fps must be > 0")
    return EncodeSettings(codec=fv.codec, crf=fv.crf, preset=fv.preset, pix_fmt=fv.pix_fmt, fps=fps,
                          start=fv.start, end=fv.end, batch=fv.batch or (4 if on_gpu else 1),
                          segment_frames=fv.segment_frames)


def run(fv) -> int:
    from real_esrgan_tf.serve import video
    from real_esrgan_tf.serve.video_io import VideoError

    try:
        jobs = _jobs(fv)
        model, default_outscale = upscale.load_model(fv)  # the loader `upscale` uses
        outscale = default_outscale if fv.outscale is None else fv.outscale
        upscalers = _upscalers(fv, model, outscale)
        settings = _settings(fv, on_gpu=any(isinstance(u, _OnDevice) for u in upscalers) or _has_gpu())
    except (UserError, ValueError, TypeError) as e:
        _error(str(e))
        return 1
    failures = 0
    for source, target in jobs:
        try:
            result = video.upscale_video(source, target, upscalers, settings, fingerprint=_fingerprint(fv),
                                         progress=True)
        except VideoError as e:
            _error(str(e))
            failures += 1
            continue
        except KeyboardInterrupt:
            _error(f"{source}: interrupted; run the same command again to resume")
            return 130
        except Exception as e:  # keep going with the other videos
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            _error(f"{source}: {type(e).__name__}: {reason[:200]}")
            failures += 1
            continue
        for warning in result.warnings:
            _warn(warning)
        resumed = f", {result.resumed_segments} segments resumed" if result.resumed_segments else ""
        rate = result.upscaled / max(result.seconds, 1e-9)
        logging.info("%s -> %s: %d frames in %.1f s (%.2f frames/s upscaled%s)", source, target,
                     result.frames, result.seconds, rate, resumed)
    if len(jobs) > 1:
        logging.info("upscaled %d of %d videos", len(jobs) - failures, len(jobs))
    return 1 if failures else 0
