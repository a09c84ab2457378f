"""`export --format web`: a static folder that upscales in the browser with TF.js (no server code).

index.html + app.js + style.css from `web_assets/`, TensorFlow.js from `web_assets/vendor/` (npm dist
files at a pinned version, re-created by tools/vendor_tfjs.sh) and the generator as a TF.js graph
model in `model/` (export.tfjs). Any static server works: `python -m http.server` in the folder.
The page tiles with the rule of `upscale` (app.js ports tiling.plan_tiles), so both give the same pixels.
"""

from __future__ import annotations

import os
import re
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


def write(generator, options) -> str:
    """`export --format web` (the `export.formats` entry point): the folder written. --tile and
    --tile_pad become the page's default tile settings."""
    return write_web(generator, options.output, fp16=options.fp16, source=options.source,
                     tile=options.tile, tile_pad=options.tile_pad)


def write_web(
    generator, folder: str, *, fp16: bool = True, source: str = "", tile: int = 256, tile_pad: int = 10
) -> str:
    """Writes the page for `generator` to `folder` atomically; returns the folder.

    Args:
      generator: one of our Keras generators (RRDBNet, SRVGGNetCompact, a weight blend).
      folder: created, or replaced if it holds an earlier web export; any other non-empty folder
        is refused (ExportError).
      fp16: fp16 weights in model/ (half the download; TF.js computes in fp32 either way).
      source: where the weights came from; the metadata keeps only its last name (a page is
        published: the folders of the exporting machine stay private).
      tile, tile_pad: the page's default core tile side (0 = whole image) and context, in input
        pixels; the user can change both in the page.
    """
    from real_esrgan_tf.export.tfjs import write_tfjs

    if tile < 0 or tile_pad < 0:
        raise ExportError(f"{folder}: tile ({tile}) and tile_pad ({tile_pad}) must be >= 0")
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
        _set_default_tiles(os.path.join(staging, "index.html"), tile, tile_pad)
        shutil.copytree(os.path.join(ASSETS, VENDOR), os.path.join(staging, VENDOR))
        public_source = os.path.basename(os.path.normpath(source)) if source else ""
        write_tfjs(generator, os.path.join(staging, MODEL), fp16=fp16, source=public_source)
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; a static server may run as another user
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _set_default_tiles(index_html: str, tile: int, tile_pad: int) -> None:
    with open(index_html, encoding="utf-8") as f:
        html = f.read()
    for element, value in (("tile", tile), ("pad", tile_pad)):
        html, count = re.subn(rf'(<input id="{element}"[^>]* value=")\d+"', rf'\g<1>{int(value)}"', html)
        if count != 1:
            raise ExportError(f"{index_html}: no <input id={element!r}> with a value to set")
    with open(index_html, "w", encoding="utf-8") as f:
        f.write(html)


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
