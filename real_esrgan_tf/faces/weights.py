"""The weight files of `--face_enhance`: official names and release URLs, found, given or downloaded.

GFPGAN's restorer (v1.3, the one `inference_realesrgan.py --face_enhance` uses, or v1.4) and facexlib's
RetinaFace ResNet-50 detector and ParseNet parser, under their official file names, from the release
URLs the official code downloads them from (gfpgan 1.3.8's README / Real-ESRGAN's inference script;
facexlib 0.3.0 `detection/__init__.py`, `parsing/__init__.py`). A file is looked for where the user
says (a file flag), else in the face weights folder (default: `<cache>/faces`, see
`weights.loader.default_cache_dir`); a missing file is downloaded there (urllib, written to a temporary
name in that folder and renamed) unless downloads are off, and when that fails the error is one line
naming the file, the URL and where to put it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from real_esrgan_tf.weights.errors import WeightsError


@dataclasses.dataclass(frozen=True)
class FaceWeightFile:
    """An official weight file: its name, where the official code downloads it, what it is, its flag."""

    name: str
    url: str
    what: str
    flag: str


GFPGAN_FILES = {
    "v1.3": FaceWeightFile(
        "GFPGANv1.3.pth", "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
        "GFPGAN v1.3 face restorer", "face_model_path"),
    "v1.4": FaceWeightFile(
        "GFPGANv1.4.pth", "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
        "GFPGAN v1.4 face restorer", "face_model_path"),
}
DETECTION_FILE = FaceWeightFile(
    "detection_Resnet50_Final.pth",
    "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    "RetinaFace ResNet-50 face detector", "face_detector_path")
PARSING_FILE = FaceWeightFile(
    "parsing_parsenet.pth", "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
    "ParseNet face parser", "face_parser_path")
DEFAULT_FACE_MODEL = "v1.3"
DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download gives up


class MissingFaceWeightsError(WeightsError):
    """A face weight file is neither given, nor in the folder, nor downloadable (one line)."""


def default_face_weights_dir() -> Path:
    """`<cache>/faces`: where face weight files are looked for and downloaded to."""
    from real_esrgan_tf.weights.loader import default_cache_dir

    return default_cache_dir() / "faces"


def download(url: str, target: Path, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Downloads `url` to `target` atomically (a temporary file in its folder, then a rename).

    Raises OSError (urllib.error.URLError is one) when the download fails; nothing is left behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if expected is not None and size != int(expected):
            raise OSError(f"incomplete download: {size} of {expected} bytes")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def find_weight_file(file: FaceWeightFile, given: str | None = None, folder: str | os.PathLike | None = None,
                     allow_download: bool = True) -> Path:
    """The path of `file`: `given` if set (it must exist), else `folder/name`, downloaded if missing."""
    if given:
        if not os.path.isfile(given):
            raise MissingFaceWeightsError(f"{given}: no such file (the {file.what}, --{file.flag})")
        return Path(given)
    directory = Path(folder) if folder else default_face_weights_dir()
    path = directory / file.name
    if path.is_file():
        return path
    hint = f"download {file.url} into {directory}/ or pass --{file.flag}"
    if not allow_download:
        raise MissingFaceWeightsError(f"{path}: missing (the {file.what}); {hint}")
    try:
        return download(file.url, path)
    except (OSError, ValueError) as e:
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise MissingFaceWeightsError(
            f"{path}: missing and the download failed ({str(reason).splitlines()[0][:120]}); {hint}"
        ) from None


@dataclasses.dataclass(frozen=True)
class FaceWeightPaths:
    restorer: Path
    detector: Path
    parser: Path


def find_face_weights(face_model: str = DEFAULT_FACE_MODEL, *, restorer: str | None = None,
                      detector: str | None = None, parser: str | None = None,
                      folder: str | os.PathLike | None = None,
                      allow_download: bool = True) -> FaceWeightPaths:
    """The three files `--face_enhance` needs (see `find_weight_file`)."""
    if face_model not in GFPGAN_FILES:
        raise ValueError(f"face model must be one of {', '.join(GFPGAN_FILES)}, got {face_model!r}")
    return FaceWeightPaths(
        find_weight_file(GFPGAN_FILES[face_model], restorer, folder, allow_download),
        find_weight_file(DETECTION_FILE, detector, folder, allow_download),
        find_weight_file(PARSING_FILE, parser, folder, allow_download),
    )


def build_face_enhancer(upscaler, paths: FaceWeightPaths, *, only_center_face: bool = False,
                        face_batch: int = 4):
    """A `FaceEnhancer` around `upscaler` with the networks read from `paths` (no torch)."""
    from real_esrgan_tf.faces.detection import FaceDetector
    from real_esrgan_tf.faces.restorer import FaceEnhancer, graph_function
    from real_esrgan_tf.weights.facexlib_pth import load_parsenet, load_retinaface
    from real_esrgan_tf.weights.gfpgan_pth import load_gfpgan

    return FaceEnhancer(
        upscaler, graph_function(load_gfpgan(str(paths.restorer))),
        FaceDetector(load_retinaface(str(paths.detector))), graph_function(load_parsenet(str(paths.parser))),
        only_center_face=only_center_face, face_batch=face_batch)
