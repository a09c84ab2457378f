"""`real-esrgan-tf upscale`: images or folders of images through a generator, official flags."""

from __future__ import annotations

import os

from absl import flags, logging

from real_esrgan_tf.cli import faces, report
from real_esrgan_tf.cli.report import UserError
from real_esrgan_tf.serve.backends import BACKENDS, backend_names
from real_esrgan_tf.serve.keras_backend import Precision
from real_esrgan_tf.serve.upscaler import AlphaMode, Upscaler

# ---------------------------------------------------------------------------- CLI
EXTENSIONS = ("auto", "png", "jpg", "webp")
_WRITABLE = {"png", "jpg", "jpeg", "webp", "bmp"}


def define_model_flags(fv: flags.FlagValues, default_model: str = "realesrgan-x4plus") -> None:
    """The flags that pick and run the generator; shared with the `video` command."""
    flags.DEFINE_string(
        "model", default_model,
        "Pretrained model name (realesrgan-x4plus, realesrgan-x4plus-anime-6b, realesr-animevideov3[-x2|-x3])"
        " or a path to a weights or model file ("
        + ", ".join(sorted({suffix for b in BACKENDS.values() for suffix in b.suffixes}))
        + "), an exported SavedModel folder or a training --model_dir.", flag_values=fv)
    flags.DEFINE_enum(
        "backend", "auto", backend_names(),
        "Which runtime runs the model; auto: the fastest installed one measured for the model (see README). "
        + "; ".join(f"{b.name}: {b.description}" for b in BACKENDS.values()) + ".", flag_values=fv)
    flags.DEFINE_integer("threads", None, "CPU threads of the ONNX Runtime/OpenVINO/ncnn/TFLite backends "
                         "(default: the runtime's).", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("outscale", None, "Final upscaling factor (Lanczos after the net); default: the "
                       "model's.", flag_values=fv)
    flags.DEFINE_integer("tile", 0, "Tile size in input pixels, 0 = whole image (images with a side "
                         "over 512 are tiled at 512 anyway; tiles are seam-free).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("tile_pad", 10, "Overlap around each tile, cropped away.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("pre_pad", 0, "Reflect padding at the bottom/right before the net.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_enum("precision", "auto", [p.value for p in Precision],
                      "Compute precision; auto: the device's native one (bf16 on a CPU with AVX512_BF16/AMX, "
                      "fp16 on a GPU with tensor cores, else fp32). fp16/bf16 fall back to fp32 when the "
                      "output is not finite.", flag_values=fv)
    flags.DEFINE_boolean("tta", False, "Average the 8 flips/transposes (8x slower).", flag_values=fv)
    flags.DEFINE_float("denoise_strength", 0.5,
                       "realesr-general-x4v3 only: 1 keeps noise, 0 removes it (blend with the wdn weights).",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_string("wdn_model", None, "The realesr-general-wdn-x4v3 weights; default: beside --model.",
                        flag_values=fv)
    flags.DEFINE_boolean("xla", False, "Compile the network with XLA.", flag_values=fv)
    flags.DEFINE_enum("act", None, ["prelu", "relu", "leakyrelu"],
                      "SRVGGNetCompact .pth without PReLU weights: the activation it was trained with "
                      "(relu or leakyrelu; it cannot be told from the weights).", flag_values=fv)


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "An image file or a folder of images.", flag_values=fv)
    flags.DEFINE_string("output", "results", "Output folder (created if missing).", flag_values=fv)
    define_model_flags(fv)
    flags.DEFINE_enum("alpha", "model", [a.value for a in AlphaMode],
                      "Alpha channel: through the model, bicubic, or dropped.", flag_values=fv)
    flags.DEFINE_enum("ext", "auto", list(EXTENSIONS), "Output format; auto = the input's (PNG for RGBA; "
                      "animated GIF/WEBP/PNG stay animated unless jpg).", flag_values=fv)
    flags.DEFINE_string("suffix", "out", "Output name is {stem}_{suffix}.{ext} ({stem}.{ext} if empty; "
                        "then an existing file of that name in an input's own folder is never overwritten).",
                        flag_values=fv)
    faces.define_face_flags(fv)


def _error(message: str) -> None:
    report.error("upscale", message)


def _warn(message: str) -> None:
    report.warning("upscale", message)


def _list_inputs(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        try:
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        except OSError as e:
            raise UserError(f"{path}: cannot list the folder ({e.strerror or e})") from None
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    raise UserError(f"{path}: no such file or folder")


def _prepare_output(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f"{folder}: cannot create output folder ({e.strerror or e})") from None
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: output is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: output folder is not writable")


def load_model(fv) -> tuple[object, float | None]:
    """(Keras model or SuperResolver backend, default outscale or None) for the model flags."""
    from real_esrgan_tf.serve.backends import BackendOptions
    from real_esrgan_tf.serve.loading import ModelLoadError, load_upscale_model

    try:
        loaded = load_upscale_model(
            fv.model, backend=fv.backend, backend_options=BackendOptions(threads=fv.threads), act=fv.act,
            denoise_strength=fv.denoise_strength, wdn_model=fv.wdn_model,
            denoise_requested=fv["denoise_strength"].present, precision=fv.precision,
        )
    except ModelLoadError as e:
        raise UserError(str(e)) from None
    return loaded.model, loaded.default_outscale


def resolve_precision_flag(fv, model, command: str) -> Precision:
    """--precision for the Upscaler of `model`, after one warning line when an explicit precision is one
    this device does not run natively (it is kept: the user asked). auto stays auto: the Upscaler
    resolves it per image (the device's native precision; fp32 for 16-bit images and other backends)."""
    import keras

    from real_esrgan_tf.serve.precision import detect_device, resolve_precision

    if isinstance(model, keras.Model):
        _, warning = resolve_precision(fv.precision, detect_device())
        if warning:
            report.warning(command, f"--precision {warning}")
    return Precision(fv.precision)


# Largest side each format can store (libwebp: 16383, libjpeg: 65500); PNG's limit is 2**31 - 1.
MAX_SIDE = {"webp": 16383, "jpg": 65500, "jpeg": 65500}


def output_path(
    input_path: str, folder: str, ext: str, suffix: str, has_alpha: bool, size: tuple[int, int] | None = None
) -> str:
    """Official naming: {stem}_{suffix}.{ext}; ext auto keeps the input's; RGBA forces PNG, and so does
    an output `size` (height, width) larger than the format can hold."""
    stem, in_ext = os.path.splitext(os.path.basename(input_path))
    extension = in_ext.lstrip(".").lower() if ext == "auto" else ext
    if extension not in _WRITABLE or (has_alpha and extension in ("jpg", "jpeg")):
        extension = "png"
    if size is not None and max(size) > MAX_SIDE.get(extension, 2**31 - 1):
        _warn(f"{input_path}: the {size[1]}x{size[0]} output is too large for {extension.upper()} "
              f"(max side {MAX_SIDE[extension]}); writing PNG")
        extension = "png"
    name = f"{stem}_{suffix}" if suffix else stem
    return os.path.join(folder, f"{name}.{extension}")


def animation_path(input_path: str, folder: str, ext: str, fmt: str, suffix: str) -> str | None:
    """Where an animated GIF/WEBP/PNG goes as an animation: {stem}_{suffix}.{gif|webp|png}, the input's
    kind with --ext auto; None when --ext names a still format (jpg: the first frame is written)."""
    extension = fmt if ext == "auto" else ext
    if extension not in ("gif", "webp", "png"):
        return None
    stem = os.path.splitext(os.path.basename(input_path))[0]
    name = f"{stem}_{suffix}" if suffix else stem
    return os.path.join(folder, f"{name}.{extension}")


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def run(fv) -> int:
    from tqdm import tqdm

    from real_esrgan_tf.images import ImageError, read_image, write_image
    from real_esrgan_tf.serve import animation

    if not fv.input:
        _error("--input is required (an image file or a folder)")
        return 1
    try:
        inputs = _list_inputs(fv.input)
        _prepare_output(fv.output)
        model, default_outscale = load_model(fv)
        outscale = default_outscale if fv.outscale is None else fv.outscale  # --outscale 0 is an error
        upscaler = Upscaler(
            model, tile=fv.tile, tile_pad=fv.tile_pad, pre_pad=fv.pre_pad,
            precision=resolve_precision_flag(fv, model, "upscale"),
            tta=fv.tta, alpha=fv.alpha, outscale=outscale, jit_compile=fv.xla, progress=True,
        )
        upscaler = faces.with_faces(fv, upscaler)  # --face_enhance: GFPGAN on the faces
    except (UserError, ValueError, TypeError) as e:
        _error(str(e))
        return 1
    if not inputs:
        _error(f"{fv.input}: no files in the folder")
        return 1
    input_real = {os.path.realpath(p) for p in inputs}
    # (device, inode) also finds an input under another spelling (case-insensitive file systems)
    input_ids = {file_id for file_id in map(_file_id, inputs) if file_id is not None}
    # With --suffix "" an output is named like an image ({stem}.{ext}): in an input's own folder an
    # existing file of that name is the user's (photo.jpg beside a single input photo.png), never
    # overwritten. Elsewhere, and with a suffix, an existing output is a previous run's and replaced.
    input_folders = {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}
    input_folders |= {os.path.dirname(p) for p in input_real}  # an input that is a symlink: its target's
    guard_siblings = not fv.suffix and os.path.realpath(fv.output) in input_folders
    written: dict[str, str] = {}
    failures = 0
    for path in tqdm(inputs, desc="images", unit="img", disable=len(inputs) < 2):
        try:
            # outputs carry no EXIF; gray + alpha stays 2 channels (written as an LA PNG)
            image = read_image(path, exif_orientation=True, keep_gray_alpha=True)
            has_alpha = image.channels in (2, 4) and upscaler.options.alpha is not AlphaMode.NONE
            size = upscaler.output_size(*image.pixels.shape[:2])
            animated = image.frames > 1 and image.format in animation.ANIMATED_FORMATS
            target = animation_path(path, fv.output, fv.ext, image.format, fv.suffix) if animated else None
            animated = target is not None
            target = target or output_path(path, fv.output, fv.ext, fv.suffix, has_alpha, size)
            real_target = os.path.realpath(target)
            if real_target in input_real or _file_id(target) in input_ids:
                raise UserError(
                    f"{path}: output {target} would overwrite an input; change --suffix or --output")
            if real_target in written:
                raise UserError(f"{path}: output {target} already written from {written[real_target]}")
            if guard_siblings and os.path.lexists(target):
                raise UserError(
                    f"{path}: output {target} would overwrite an existing file in the input's folder "
                    "(--suffix \"\" names outputs like images); change --suffix or --output")
            if animated:  # every frame, with its duration and the loop count
                frames = animation.read_animation(path)
                animation.write_animation(target, animation.upscale_animation(frames, upscaler.upscale))
                written[real_target] = path
                continue
            if image.frames > 1:
                _warn(f"{path}: {image.frames} frames (animated); only the first is written to {target}")
            result = upscaler.upscale(image.pixels)
            write_image(target, result, icc_profile=image.icc_profile)  # e.g. Display P3 photos
            written[real_target] = path
        except (ImageError, UserError) as e:
            _error(str(e))
            failures += 1
        except Exception as e:  # keep going with the other images
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            _error(f"{path}: {type(e).__name__}: {reason[:200]}")
            failures += 1
    logging.info("upscaled %d of %d images into %s", len(inputs) - failures, len(inputs), fv.output)
    return 1 if failures else 0
