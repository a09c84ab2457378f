"""`real-esrgan-tf prepare`: image folders -> PNG sub-image crops in TFRecord shards + manifest.json.

Ctrl-C or SIGTERM: the finished shards are kept, the worker processes are stopped, exit code 130 / 143
(the same command resumes).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from absl import flags, logging

from real_esrgan_tf.cli.signals import Terminated, exit_code, signal_name, sigterm_as_interrupt
from real_esrgan_tf.data.plan import DEFAULT_CROPS_PER_SHARD, PrepareConfig, PrepareError
from real_esrgan_tf.data.records import MANIFEST_NAME


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_multi_string("input", [], "Folder of images (repeatable).", flag_values=fv)
    flags.DEFINE_string("output", None, "Folder for the shards and manifest.json.", flag_values=fv)
    flags.DEFINE_string("gt", "", "Paired mode: folder of ground-truth images.", flag_values=fv)
    flags.DEFINE_string(
        "lq", "", "Paired mode: folder of low-quality images, same names as --gt.", flag_values=fv
    )
    flags.DEFINE_integer("scale", 4, "Paired mode: GT size / LQ size.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("crop", 400, "Sub-image size (0: whole images).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("step", 200, "Sub-image stride.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer(
        "thresh",
        0,
        "A leftover border wider than this gets one more crop flush with the edge.",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "multiscale",
        False,
        "Also crop Lanczos x0.75, x0.5, x1/3 and shortest-edge-400 copies.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_shards",
        0,
        f"Shards (0: one per {DEFAULT_CROPS_PER_SHARD} crops).",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "workers", 1, "Worker processes (the output does not depend on it).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_boolean(
        "overwrite", False, "Delete shards of a different earlier run in --output.", flag_values=fv
    )
    flags.DEFINE_float(
        "pause_after_shard",
        0.0,
        "Seconds to sleep after each shard (for resumability tests).",
        lower_bound=0.0,
        flag_values=fv,
    )


def run(fv: flags.FlagValues) -> int:
    from real_esrgan_tf.data.prepare import prepare

    if not fv.output:
        print("real-esrgan-tf prepare: --output is required", file=sys.stderr)
        return 2
    if bool(fv.gt) != bool(fv.lq) or (fv.gt and fv.input):
        print(
            "real-esrgan-tf prepare: give either --input DIR... or both --gt DIR and --lq DIR",
            file=sys.stderr,
        )
        return 2
    config = PrepareConfig(
        inputs=tuple(os.path.abspath(d) for d in fv.input),  # the same run from any working folder
        gt=os.path.abspath(fv.gt) if fv.gt else "",
        lq=os.path.abspath(fv.lq) if fv.lq else "",
        scale=fv.scale if fv.gt else 1,
        crop=fv.crop,
        step=fv.step,
        thresh=fv.thresh,
        multiscale=fv.multiscale,
        num_shards=fv.num_shards,
    )
    start = time.time()
    try:
        with sigterm_as_interrupt():
            manifest = prepare(
                config,
                fv.output,
                workers=fv.workers,
                overwrite=fv.overwrite,
                pause_after_shard=fv.pause_after_shard,
            )
    except PrepareError as e:
        print(f"real-esrgan-tf prepare: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a cluster stopping the job): Terminated
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        print(
            f"real-esrgan-tf prepare: interrupted ({signal_name(signum)}); finished shards are kept: "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return exit_code(signum)
    for s in manifest["skipped"]:
        logging.warning("skipped %s: %s", s["path"], s["reason"])
    logging.info(
        "%d records in %d shards (%d files skipped, %d gray promoted, %d alpha dropped) in %.1f s -> %s",
        manifest["total_records"],
        len(manifest["shards"]),
        len(manifest["skipped"]),
        manifest["gray_promoted_to_rgb"],
        manifest["alpha_dropped"],
        time.time() - start,
        os.path.join(fv.output, MANIFEST_NAME),
    )
    # The shards hold every usable image; the exit code still says that some input was not used.
    return 1 if manifest["skipped"] else 0
