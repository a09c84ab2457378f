"""Reading and writing image files without losing what they are: bit depth, gray, alpha.

Pillow decodes everything except 16-bit colour PNGs (it has no 16-bit RGB mode and silently drops
to 8 bits), which TensorFlow's PNG decoder reads at full depth. Writes are atomic: a temp file in
the destination folder, then `os.replace`, so a crash never leaves a truncated output.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import tempfile
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ITU-R BT.601 luma weights (R, G, B), as cv2.COLOR_RGB2GRAY: how the official code turns an RGB result
# back into a gray (or alpha) plane. The one definition for the Upscaler and the exported graph.
BT601_LUMA = (0.299, 0.587, 0.114)

class ImageError(Exception):
    """A file that cannot be read or written as an image; the message names file and reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass
class DecodedImage:
    """pixels: (H, W, C) uint8 or uint16 with C in {1, 3, 4} (2 = gray + alpha only when read with
    `keep_gray_alpha`); format: 'png', 'jpeg', 'webp', ..."""

    pixels: np.ndarray
    format: str
    path: str = ""
    frames: int = 1  # an animated GIF/WEBP/PNG has more; `pixels` is its first frame
    icc_profile: bytes | None = None  # the embedded colour profile when it fits `pixels` (RGB or gray)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def channels(self) -> int:
        return self.pixels.shape[-1]


def _png_bit_depth(data: bytes) -> int | None:
    if data[:8] != _PNG_MAGIC or len(data) < 26:
        return None
    # IHDR is the first chunk: length(4) type(4) width(4) height(4) bit_depth(1) colour_type(1)
    return struct.unpack(">B", data[24:25])[0]


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) stored pixels -> as displayed, for an EXIF Orientation tag (1-8; others: unchanged).

    The same transforms as `PIL.ImageOps.exif_transpose`.
    """
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def icc_fits(profile: bytes | None, channels: int) -> bool:
    """An ICC profile describes pixels of `channels` channels: 'RGB ' for 3/4, 'GRAY' for 1/2 (a CMYK
    JPEG's profile does not describe the RGB it is converted to)."""
    if not profile or len(profile) < 128:
        return False
    return profile[16:20] == (b"GRAY" if channels in (1, 2) else b"RGB ")


def _icc_of(im: Image.Image, channels: int) -> bytes | None:
    profile = im.info.get("icc_profile")
    return profile if isinstance(profile, bytes) and icc_fits(profile, channels) else None


def _exif_orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block must not make a readable image unreadable
        return 1


def decode_image(
    data: bytes, path: str = "<bytes>", *, exif_orientation: bool = False, keep_gray_alpha: bool = False
) -> DecodedImage:
    """Decodes PNG (8/16-bit), JPEG, WEBP, BMP, TIFF, GIF bytes to (H, W, C) uint8/uint16.

    Gray + alpha becomes RGBA (as cv2.IMREAD_UNCHANGED reads it, 8- and 16-bit), as does a PNG whose
    tRNS chunk makes one colour transparent; keep_gray_alpha: gray + alpha (and a gray PNG with a tRNS
    colour key) stays 2 channels instead. exif_orientation: turn the pixels as the EXIF Orientation
    tag says (as viewers show them); off by default, as the official cv2.IMREAD_UNCHANGED reads.
    """
    if not data:
        raise ImageError(path, "empty file")
    orientation, icc = 1, None
    if _png_bit_depth(data) == 16:
        import tensorflow as tf

        try:
            pixels = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
        except Exception as e:  # tf raises InvalidArgumentError with a long message
            raise ImageError(path, f"corrupt 16-bit PNG ({str(e).splitlines()[0][:120]})") from None
        if pixels.shape[-1] == 2 and not keep_gray_alpha:  # gray + alpha
            pixels = pixels[..., [0, 0, 0, 1]]
        if (exif_orientation and b"eXIf" in data) or b"iCCP" in data:  # spares a second decode if not
            try:
                with Image.open(io.BytesIO(data)) as im:
                    icc = _icc_of(im, pixels.shape[-1])  # iCCP comes before the pixels: no decode
                    if exif_orientation and b"eXIf" in data:
                        orientation = _exif_orientation(im)
            except Exception:
                pass
        pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
        return DecodedImage(pixels, "png", path, icc_profile=icc)
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
            # MPO (camera JPEGs) holds extra preview/depth pictures, not frames of an animation
            frames = 1 if fmt == "mpo" else int(getattr(im, "n_frames", 1) or 1)
            im.load()
            if exif_orientation:
                orientation = _exif_orientation(im)
            pixels = _pil_to_array(im, keep_gray_alpha)
            icc = _icc_of(im, pixels.shape[-1])
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"cannot decode ({e})") from None
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    return DecodedImage(pixels, "jpeg" if fmt == "jpg" else fmt, path, frames, icc)


def _pil_to_array(im: Image.Image, keep_gray_alpha: bool = False) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        if mode == "I" and arr.max(initial=0) <= 255:
            return arr.astype(np.uint8)[..., None]
        return np.clip(arr, 0, 65535).astype(np.uint16)[..., None]
    if keep_gray_alpha and (mode == "LA" or (mode == "L" and "transparency" in im.info)):
        return np.asarray(im.convert("LA"))
    if mode == "LA" or (mode in ("L", "RGB", "P") and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))[..., None]
    if mode == "P":
        im = im.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    return np.asarray(im)


def read_image(path: str, *, exif_orientation: bool = False, keep_gray_alpha: bool = False) -> DecodedImage:
    """Reads a file; every failure is an ImageError naming the file and the reason."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(path, e.strerror or str(e)) from None
    return decode_image(data, path, exif_orientation=exif_orientation, keep_gray_alpha=keep_gray_alpha)


def _png_with_icc(png: bytes, profile: bytes) -> bytes:
    """Inserts an iCCP chunk after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    body = b"icc\0\0" + zlib.compress(profile)  # name, NUL, compression method 0 (deflate)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    return png[:33] + chunk + png[33:]


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 95, icc_profile: bytes | None = None) -> bytes:
    """(H, W, C) uint8/uint16, C in {1, 2, 3, 4} -> file bytes. 16-bit is kept for PNG only.

    Gray + alpha (C = 2) is an LA PNG; JPEG drops the alpha (as for RGBA), WEBP and BMP store RGBA.
    icc_profile: embedded in PNG, JPEG and WEBP when it fits the pixels (`icc_fits`), else left out.
    """
    fmt = fmt.lower()
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if not icc_fits(icc_profile, pixels.shape[-1]):
        icc_profile = None
    if fmt == "png" and pixels.dtype == np.uint16:
        import tensorflow as tf

        png = tf.io.encode_png(pixels).numpy()
        return _png_with_icc(png, icc_profile) if icc_profile else png
    if pixels.dtype == np.uint16:
        pixels = (pixels.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if pixels.shape[-1] == 1:
        im = Image.fromarray(pixels[..., 0], "L")
    else:
        im = Image.fromarray(pixels, {2: "LA", 4: "RGBA"}.get(pixels.shape[-1], "RGB"))
    if im.mode == "LA" and fmt in ("webp", "bmp"):  # neither stores gray + alpha
        im = im.convert("RGBA")
        icc_profile = None  # a gray profile does not describe RGBA
    if im.mode == "L" and fmt == "webp":  # WEBP is always RGB(A): Pillow converts, the gray profile must go
        im = im.convert("RGB")
        icc_profile = None
    buf = io.BytesIO()
    icc = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt in ("jpg", "jpeg"):
        if im.mode in ("RGBA", "LA"):
            im = im.convert(im.mode[:-1])
        im.save(buf, "JPEG", quality=quality, **icc)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=quality, **icc)
    elif fmt == "png":
        im.save(buf, "PNG", **icc)
    elif fmt == "bmp":
        im.save(buf, "BMP")
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    return buf.getvalue()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes via a temp file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    # The temp name is hidden and short: a target name near NAME_MAX (255 bytes) must still work.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path)[-32:], dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_image(
    path: str, pixels: np.ndarray, fmt: str | None = None, quality: int = 95, icc_profile: bytes | None = None
) -> None:
    """Encodes and writes atomically; the format defaults to the file's extension."""
    fmt = fmt or os.path.splitext(path)[1].lstrip(".") or "png"
    try:
        write_bytes_atomic(path, encode_image(pixels, fmt, quality, icc_profile))
    except OSError as e:
        raise ImageError(path, f"cannot write ({e.strerror or e})") from None
