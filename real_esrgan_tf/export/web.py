"""`export --format web`: a static folder that upscales in the browser with TF.js (no server code).

index.html + app.js + style.css from `web_assets/`, TensorFlow.js from `web_assets/vendor/` (npm dist
files at a pinned version, re-created by tools/vendor_tfjs.sh) and the generator as a TF.js graph
model in `model/` (export.tfjs). Any static server works: `python -m http.server` in the folder.
The page tiles with the rule of `upscale` (app.js ports tiling.plan_tiles), so both give the same pixels.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from real_esrgan_tf.export.common import ExportError

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web_assets")
PAGE_FILES = ("index.html", "app.js", "style.css")
VENDOR = "vendor"
MODEL = "model"


def is_web_export(folder: str) -> bool:
    """True for a folder this module wrote (so a new export may replace it)."""
    return os.path.isfile(os.path.join(folder, "index.html")) and os.path.isfile(
        os.path.join(folder, MODEL, "model.json")
    )


def write_web(generator, folder: str, *, fp16: bool = True, source: str = "") -> str:
    """Writes the page for `generator` to `folder` atomically; returns the folder.

    Args:
      generator: one of our Keras generators (RRDBNet, SRVGGNetCompact, a weight blend).
      folder: created, or replaced if it holds an earlier web export; any other non-empty folder
        is refused (ExportError).
      fp16: fp16 weights in model/ (half the download; TF.js computes in fp32 either way).
      source: where the weights came from, stored in the model's metadata.
    """
    from real_esrgan_tf.export.tfjs import write_tfjs

    folder = os.path.abspath(folder)
    if os.path.isfile(folder):
        raise ExportError(f"{folder}: is a file; the web export is a folder")
    if os.path.isdir(folder) and os.listdir(folder) and not is_web_export(folder):
        raise ExportError(f"{folder}: not empty and not an earlier web export; refusing to overwrite it")
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-web-", dir=parent)
    try:
        for name in PAGE_FILES:
            shutil.copyfile(os.path.join(ASSETS, name), os.path.join(staging, name))
        shutil.copytree(os.path.join(ASSETS, VENDOR), os.path.join(staging, VENDOR))
        write_tfjs(generator, os.path.join(staging, MODEL), fp16=fp16, source=source)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a static server may run as another user
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _replace_folder(new: str, folder: str) -> None:
    """Moves `new` to `folder`; an existing `folder` is renamed aside first and removed after."""
    if not os.path.exists(folder):
        os.rename(new, folder)
        return
    old = tempfile.mkdtemp(prefix=".old-web-", dir=os.path.dirname(folder))
    os.rmdir(old)
    os.rename(folder, old)
    try:
        os.rename(new, folder)
    except OSError:
        os.rename(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
