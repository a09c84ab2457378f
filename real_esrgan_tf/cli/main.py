"""The `real-esrgan-tf` command: one sub-command per stage of the flow.

Each sub-command is a module of this package with two functions: `define_flags(fv:
absl.flags.FlagValues)` and `run(fv) -> int` (the exit code). They import TensorFlow only inside
`run`, so `--help` stays fast. Flags are defined on
a fresh `FlagValues` per invocation, so there is no global flag state and sub-commands may reuse
flag names (`--input`, `--output`).
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import flags, logging

from real_esrgan_tf.cli import client, degrade, evaluate, export, prepare, train, upscale, video

# name -> (module implementing define_flags/run, one-line help), in the order of the flow
COMMANDS = {
    "prepare": (prepare, "Turn image folders into TFRecord shards."),
    "degrade": (degrade, "Preview the high-order degradation on an image."),
    "train": (train, "Train RealESRNet / RealESRGAN from a pipeline config."),
    "export": (export, "Export a generator as a SavedModel or TFLite model."),
    "upscale": (upscale, "Upscale images with a pretrained or trained generator."),
    "video": (video, "Upscale videos, keeping sound, subtitles, timing and metadata."),
    "evaluate": (evaluate, "Score a generator: PSNR/SSIM against GT (and bicubic's), NIQE."),
    "client": (client, "Upscale an image through TensorFlow Serving."),
}


def _usage() -> str:
    lines = ["usage: real-esrgan-tf COMMAND [--flags]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines.append("")
    lines.append("`real-esrgan-tf COMMAND --help` lists a command's flags.")
    return "\n".join(lines)


@contextlib.contextmanager
def _stderr_to_devnull():
    """Send file descriptor 2 to /dev/null (C++ logs that no environment variable silences)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow without its start-up log lines (oneDNN, CUDA probing) unless asked for.

    TF 2.21 prints them through absl before its log level is read, so TF_CPP_MIN_LOG_LEVEL alone does
    not hide them; it does hide the later ones (e.g. `failed call to cuInit` on a machine without a
    GPU). `--verbose` or a TF_CPP_MIN_LOG_LEVEL set by the user keeps everything.
    """
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with _stderr_to_devnull():
            import tensorflow  # noqa: F401
    except ImportError:
        pass  # the sub-command's own import reports it, with stderr back


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in COMMANDS:
        print(f"real-esrgan-tf: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if "--verbose" not in argv[2:]:
        _quiet_tensorflow_import()
    module = COMMANDS[name][0]
    fv = flags.FlagValues()
    module.define_flags(fv)
    flags.DEFINE_boolean("verbose", False, "Log at debug level.", flag_values=fv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv[2:]):
        print(f"real-esrgan-tf {name}: {COMMANDS[name][1]}\n")
        print(fv.get_help())
        return 0
    try:
        fv([f"real-esrgan-tf {name}"] + argv[2:])
    except flags.Error as e:
        print(f"real-esrgan-tf {name}: {e}", file=sys.stderr)
        return 2
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl logging reads the global flags; ours live in `fv`
    logging.set_verbosity(logging.DEBUG if fv.verbose else logging.INFO)
    logging.use_absl_handler()
    return int(module.run(fv) or 0)


def console_main() -> None:
    """Entry point of the console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
