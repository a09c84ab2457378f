"""One-line messages of the commands (`real-esrgan-tf COMMAND: error: ...` on stderr, written above any
tqdm bar) and the error type for problems with the command line, a file or a model."""

from __future__ import annotations

import sys


class UserError(Exception):
    """A one-line problem with the command line, a file or a model."""


def error(command: str, message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"real-esrgan-tf {command}: error: {message}", file=sys.stderr)


def warning(command: str, message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"real-esrgan-tf {command}: warning: {message}", file=sys.stderr)
