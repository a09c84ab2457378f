"""Time to quality: held-out Y-PSNR of the compact generator trained from scratch, per CPU-minute.

Trains SRVGGNetCompact (64 features, 32 convs, PReLU) with the stage-1 recipe of
`pipelines/bench_compact_x4_stage1.toml` (RealESRNet-style L1 on the USM-sharpened GT, the official
second-order degradation in the loop, batch 12, GT 128 from 400x400 shard crops) on shards of real
photos (written with `real_esrgan_tf.data.prepare`) for a wall-clock training budget. Every
`--eval_every_minutes` of training time it scores the EMA and the raw generator on a held-out
validation set made from OTHER photos with `evaluation.degraded_validation_pairs` (fixed seed):
Y-PSNR as BasicSR computes it (crop_border = scale; SR rounded to uint8 as BasicSR's tensor2img).
The classical upsamplers (Pillow's Image.resize: bicubic, bilinear, Lanczos, nearest; and MATLAB
bicubic, `evaluation.bicubic_upscale`) are scored on the same LQ. Evaluation time is not counted in
the budget. Optional stage 2 (`--stage2_minutes`): the GAN recipe from the stage-1 EMA generator,
with Y-PSNR and NIQE (BasicSR's) of the EMA and the raw generator at every evaluation.

Prints ONE JSON line; writes a PNG plot of the curve with the baselines as horizontal lines
(matplotlib: `pip install -e .[bench]`).

    python benchmarks/bench_time_to_quality.py [--minutes 60] [--eval_every_minutes 5]
        [--lr 2e-4] [--ema_decay 0.999] [--set optimizer.milestones=[...]] [--stage2_minutes 5]
        [--work_dir DIR] [--plot time_to_quality.png] [--no_mate]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

PIPELINE = "bench_compact_x4_stage1"
# Real photographs shipped with scikit-image (its `data` folder): which train, which validate.
SKIMAGE_TRAIN = (
    "astronaut.png", "brick.png", "camera.png", "coffee.png", "grass.png", "gravel.png",
    "motorcycle_left.png",
)
SKIMAGE_VAL = ("chelsea.png", "rocket.jpg")
# Debian `mate-backgrounds` nature photographs (used when installed).
MATE_DIR = "/usr/share/backgrounds/mate/nature"
MATE_TRAIN = (
    "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "GreenMeadow.jpg", "RainDrops.jpg",
    "Storm.jpg", "TwoWings.jpg", "YellowFlower.jpg",
)
MATE_VAL = ("Garden.jpg", "LadyBird.jpg", "Wood.jpg")
VAL_SIDE = 400  # validation GT crops: the training crop size (the degradation sees the same scale)
PIL_METHODS = ("bicubic", "bilinear", "lanczos", "nearest")


def photo_sets(use_mate: bool) -> tuple[list[str], list[str]]:
    """(train paths, validation paths): disjoint photographs; mate's only if installed and wanted."""
    import skimage

    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    train = [os.path.join(sk, n) for n in SKIMAGE_TRAIN]
    val = [os.path.join(sk, n) for n in SKIMAGE_VAL]
    if use_mate and all(os.path.isfile(os.path.join(MATE_DIR, n)) for n in MATE_TRAIN + MATE_VAL):
        train += [os.path.join(MATE_DIR, n) for n in MATE_TRAIN]
        val += [os.path.join(MATE_DIR, n) for n in MATE_VAL]
    missing = [p for p in train + val if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"missing photographs: {missing}")
    return train, val


def make_shards(train_paths: list[str], shards: str) -> tuple[str, int]:
    """Official sub-images (crop 400, step 200) of the training photos (linked into a `train_photos`
    folder next to `shards`); shards of the same photos already there are reused.
    Returns (file pattern, number of crops)."""
    from real_esrgan_tf.data.plan import PrepareConfig
    from real_esrgan_tf.data.prepare import prepare

    shards = os.path.abspath(shards)
    photos = os.path.join(os.path.dirname(shards), "train_photos")
    os.makedirs(photos, exist_ok=True)
    for p in train_paths:
        link = os.path.join(photos, os.path.basename(p))
        if not os.path.lexists(link):
            os.symlink(p, link)
    manifest = prepare(PrepareConfig(inputs=(photos,), crop=400, step=200), shards, progress=False)
    return os.path.join(shards, "*.tfrecord"), manifest["total_records"]


def validation_gt(val_paths: list[str], crops_per_image: int):
    """GT crops of side min(VAL_SIDE, shorter side) (multiple of 4), evenly spaced along the image's
    diagonal (up to `crops_per_image`); yields (name, uint8/uint16 RGB)."""
    import numpy as np

    from real_esrgan_tf.evaluation import read_rgb

    for path in val_paths:
        img = read_rgb(path)
        h, w = img.shape[:2]
        side = min(VAL_SIDE, h, w) // 4 * 4
        n = crops_per_image if min(h, w) >= 2 * side else 1
        for k, t in enumerate(np.linspace(0.0, 1.0, n + 2)[1:-1] if n > 1 else [0.5]):
            y, x = int(round((h - side) * t)), int(round((w - side) * t))
            yield f"{os.path.basename(path)}#{k}", img[y : y + side, x : x + side]


def pillow_upscale(lq, gt, method: str):
    """The uint8 LQ resized to the GT's size with Pillow's `method` (PIL.Image.Resampling name)."""
    import numpy as np
    from PIL import Image

    resample = getattr(Image.Resampling, method.upper())
    return np.asarray(Image.fromarray(lq).resize((gt.shape[1], gt.shape[0]), resample))


def classical_baselines(pairs, scale: int) -> dict[str, float]:
    import numpy as np

    from real_esrgan_tf.evaluation import bicubic_upscale, calculate_psnr

    scores = {f"pillow_{m}": [] for m in PIL_METHODS} | {"matlab_bicubic": []}
    for lq, gt in pairs:
        for m in PIL_METHODS:
            scores[f"pillow_{m}"].append(calculate_psnr(pillow_upscale(lq, gt, m), gt, scale))
        scores["matlab_bicubic"].append(calculate_psnr(bicubic_upscale(lq, scale), gt, scale))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def super_resolve(generator, lq):
    """uint8 SR of one uint8 LQ, rounded as BasicSR's tensor2img."""
    import numpy as np

    sr = generator(lq[None].astype(np.float32) / 255.0, training=False)
    sr = np.clip(np.asarray(sr, dtype=np.float32)[0], 0.0, 1.0)
    return np.round(sr * 255.0).astype(np.uint8)


def score(generator, pairs, scale: int, niqe: bool = False) -> dict[str, float]:
    import numpy as np

    from real_esrgan_tf.evaluation import calculate_niqe, calculate_psnr

    psnrs, niqes = [], []
    for lq, gt in pairs:
        sr = super_resolve(generator, lq)
        psnrs.append(calculate_psnr(sr, gt, scale))
        if niqe:
            niqes.append(calculate_niqe(sr, scale))
    out = {"psnr_y": float(np.mean(psnrs))}
    if niqe:
        out["niqe"] = float(np.mean(niqes))
    return out


def reinitialise(trainer, scheme: str, last_scale: float, seed: int) -> dict:
    """Re-draws the generator's conv weights (before any step) and copies them into the EMA generator.

    "recipe": as the pipeline builds it (`generator.init`: "dirac" in the benchmark recipe; "default"
        = the official kaiming_uniform(a=sqrt(5)) kernels with zero biases, through which the
        residual branch's signal vanishes: |residual| ~1e-13 levels at init, SR = nearest upsampling).
    "torch": PyTorch's nn.Conv2d defaults, which the official code keeps: the same kernels plus biases
        uniform(+-1/sqrt(fan_in)).
    "he": kaiming_uniform for PReLU slope 0.25 (gain^2 = 2 / (1 + 0.25^2)), which keeps the signal
        through the body; the last conv is multiplied by `last_scale` so the net starts close to the
        nearest upsampling but with gradients of a useful size everywhere.
    Returns {"scheme", "last_scale", "generator_init", "initial_abs_residual_levels"} (fixed random LQ).
    """
    import keras
    import numpy as np

    generator = trainer.generator
    rng = np.random.default_rng(seed)
    convs = [layer for layer in generator.layers if isinstance(layer, keras.layers.Conv2D)]
    for i, conv in enumerate(convs):
        if scheme == "recipe":
            break
        shape = tuple(conv.kernel.shape)
        fan_in = int(np.prod(shape[:3]))
        if scheme == "torch":
            bound = np.sqrt(1.0 / fan_in)  # kaiming_uniform(a=sqrt(5)): the same bound as the bias
            conv.bias.assign(rng.uniform(-bound, bound, conv.bias.shape).astype(np.float32))
        elif scheme == "he":
            bound = np.sqrt(3.0 * 2.0 / (1.0 + 0.25**2) / fan_in)
            conv.bias.assign(np.zeros(conv.bias.shape, np.float32))
        else:
            raise SystemExit(f"--init {scheme!r}: not recipe, torch or he")
        kernel = rng.uniform(-bound, bound, shape)
        if scheme == "he" and i == len(convs) - 1:
            kernel *= last_scale
        conv.kernel.assign(kernel.astype(conv.kernel.dtype))
    trainer.ema_generator.set_weights(generator.get_weights())
    lq = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    sr = np.asarray(generator(lq, training=False), np.float32)
    nearest = np.repeat(np.repeat(lq, 4, axis=1), 4, axis=2)
    residual = float(np.mean(np.abs(sr - nearest)) * 255.0)
    return {
        "scheme": scheme, "last_scale": last_scale if scheme == "he" else None,
        "generator_init": getattr(generator, "init", None) if scheme == "recipe" else None,
        "initial_abs_residual_levels": residual,
    }


def train_for(
    run, data: str, seconds: float, eval_every: float, evaluate, print_fn, count_first_step: bool = False
) -> dict:
    """Steps `run` for `seconds` of training time, calling `evaluate(minutes, step)` at 0 and every
    `eval_every` seconds of training time (and at the end). The first step (tracing + XLA compile,
    minutes on a busy CPU) is left out of the budget unless `count_first_step`; its time is returned.
    Returns timing totals."""
    from real_esrgan_tf.training.build import make_dataset
    from real_esrgan_tf.training.config import XlaScope
    from real_esrgan_tf.training.strategy import make_train_function

    t = run.config.train
    iterator = iter(make_dataset(run.config, data, run.strategy, run.start_step, deterministic=False))
    step_fn = make_train_function(run.trainer, run.strategy, t.xla is XlaScope.FULL_STEP)
    step, trained, next_eval = run.start_step, 0.0, eval_every
    evaluate(0.0, step)
    first_step_seconds = None
    metrics = {}
    while trained < seconds:
        start = time.perf_counter()
        metrics = step_fn(iterator)
        metrics = {k: float(v) for k, v in metrics.items()}  # waits for the step
        elapsed = time.perf_counter() - start
        if first_step_seconds is None:
            first_step_seconds = elapsed  # tracing + compilation
            elapsed = elapsed if count_first_step else 0.0
        trained += elapsed
        step += 1
        if trained >= next_eval or trained >= seconds:
            losses = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            print_fn(f"step {step} {trained / 60:.2f} min {losses}")
            evaluate(trained / 60.0, step)
            next_eval = (trained // eval_every + 1) * eval_every  # a slow step skips, not piles up
    steps = step - run.start_step
    after_first = trained - (first_step_seconds if count_first_step else 0.0)
    steady = (steps - 1) / max(after_first, 1e-9) if steps > 1 else None
    return {
        "steps": steps,
        "train_seconds": trained,
        "first_step_seconds": first_step_seconds,
        "first_step_in_budget": count_first_step,
        "steps_per_second": steady,
        "last_metrics": metrics,
    }


def overrides_from(args) -> list[str]:
    sets = []
    for flag, key in (
        ("lr", "optimizer.g_lr"), ("ema_decay", "train.ema_decay"), ("batch", "train.batch_size_per_replica"),
        ("gt_size", "train.gt_size"), ("crop_size", "train.crop_size"), ("seed", "train.seed"),
    ):
        if getattr(args, flag) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    for flag, key in (("precision", "train.precision"), ("xla", "train.xla")):
        if getattr(args, flag) is not None:
            sets.append(f'{key}="{getattr(args, flag)}"')
    return sets + list(args.set)


def stage2_overrides(args, ema_path: str) -> list[str]:
    """Stage 2 (official train_realesrgan_x4plus.yml): U-Net D, G/D lr 1e-4, L1 + perceptual + 0.1 GAN."""
    sets = [
        'train.stage="realesrgan"', f'init.generator="{ema_path}"', "optimizer.g_lr=1e-4",
        "optimizer.d_lr=1e-4", "losses.gan_weight=0.1",
    ]
    if args.stage2_perceptual == "random":
        sets += ["losses.perceptual_weight=1.0", 'losses.vgg_weights="random"']
    else:
        sets += ["losses.perceptual_weight=0.0"]
    return sets + list(args.stage2_set)


def plot(path: str, curve: list[dict], baselines: dict, title: str, stage2: dict | None, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_niqe = bool(stage2) and "niqe_ema" in stage2["curve"][0]
    if with_niqe:
        fig, (ax, ax_niqe) = plt.subplots(1, 2, figsize=(13, 5), dpi=100, width_ratios=(3, 2))
    else:
        fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    minutes = [c["minutes"] for c in curve]
    if len(curve) > 1:  # stage 1 ran (not only a saved generator scored at minute 0)
        ax.plot(minutes, [c["psnr_ema"] for c in curve], "o-", label="EMA generator")
        ax.plot(minutes, [c["psnr_g"] for c in curve], "s--", label="raw generator", alpha=0.7)
    styles = iter(zip(["-", "--", "-.", ":", (0, (5, 1))], ["C2", "C3", "C4", "C5", "C7"], strict=True))
    for name, value in sorted(baselines.items(), key=lambda kv: -kv[1]):
        style, color = next(styles)
        ax.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{name} {value:.2f}")
    if stage2:
        s2 = stage2["curve"]
        s2_minutes, s2_psnr = [c["minutes"] for c in s2], [c["psnr_ema"] for c in s2]
        ax.plot(s2_minutes, s2_psnr, "^-", color="black", label="stage 2 EMA (GAN)")
        if with_niqe:
            ax.plot(s2_minutes, [c["psnr_g"] for c in s2], "v--", color="gray", label="stage 2 raw G (GAN)")
            ax_niqe.plot(s2_minutes, [c["niqe_ema"] for c in s2], "^-", color="black", label="stage 2 EMA")
            ax_niqe.plot(s2_minutes, [c["niqe_g"] for c in s2], "v--", color="gray", label="stage 2 raw G")
            ax_niqe.axhline(stage2["niqe_pillow_bicubic"], color="C2", linewidth=1,
                            label=f"pillow_bicubic {stage2['niqe_pillow_bicubic']:.2f}")
            ax_niqe.set_xlabel("training minutes (stage 2)")
            ax_niqe.set_ylabel("validation NIQE (BasicSR, lower is better)")
            ax_niqe.grid(True, alpha=0.3)
            ax_niqe.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation Y-PSNR (dB, BasicSR, crop_border = scale)")
    if with_niqe:
        fig.suptitle(title, fontsize=9)
    else:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0,
                   help="stage-1 training budget (wall clock); 0 with --set init.generator=G.weights.h5 "
                   "scores that generator and runs only stage 2 from it")
    p.add_argument("--eval_every_minutes", type=float, default=5.0)
    p.add_argument("--pipeline", default=PIPELINE)
    p.add_argument("--lr", type=float, help="optimizer.g_lr (recipe: 2e-4)")
    p.add_argument("--ema_decay", type=float, help="train.ema_decay (recipe: 0.999)")
    p.add_argument("--batch", type=int, help="train.batch_size_per_replica (recipe: 12)")
    p.add_argument("--gt_size", type=int, help="train.gt_size (recipe: 128)")
    p.add_argument("--crop_size", type=int, help="train.crop_size (recipe: 400)")
    p.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument("--xla", choices=("off", "model_step", "full_step"))
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--init", choices=("recipe", "torch", "he"), default="recipe",
                   help="generator initialisation (see reinitialise); recipe: generator.init of the pipeline")
    p.add_argument("--init_last_scale", type=float, default=0.01, help="--init he: last conv factor")
    p.add_argument("--count_first_step", action="store_true",
                   help="count the first step (graph tracing + XLA compile) in the budget and the curve")
    p.add_argument("--set", action="append", default=[], help="pipeline override key=value (repeatable)")
    p.add_argument("--val_seed", type=int, default=12, help="seed of the degraded validation set")
    p.add_argument("--val_crops_per_image", type=int, default=3)
    p.add_argument("--val_max", type=int, default=0, help="use only the first N validation pairs (0: all)")
    p.add_argument("--no_mate", action="store_true", help="scikit-image photos only")
    p.add_argument("--stage2_minutes", type=float, default=0.0)
    p.add_argument("--stage2_eval_every_minutes", type=float, default=0.0, help="0: the stage-1 interval")
    p.add_argument("--stage2_perceptual", choices=("off", "random"), default="off",
                   help="off: perceptual_weight 0; random: random VGG19 weights (meaningless term)")
    p.add_argument("--stage2_set", action="append", default=[], help="stage-2 pipeline override")
    p.add_argument("--work_dir", default="", help="shards, checkpoints (default: a temp folder)")
    p.add_argument("--shards", default="", help="training shards folder (default: WORK_DIR/shards); "
                   "written by prepare unless it holds those of the same photos")
    p.add_argument("--plot", default="time_to_quality.png")
    args = p.parse_args(argv)

    import keras
    import numpy as np
    import PIL

    from real_esrgan_tf.evaluation import degraded_validation_pairs
    from real_esrgan_tf.training import checkpoints
    from real_esrgan_tf.training.build import build_run
    from real_esrgan_tf.training.config import load_pipeline, pipeline_to_dict

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ttq_")
    load_start = os.getloadavg()
    sets = overrides_from(args)
    config = load_pipeline(args.pipeline, sets)
    t = config.train

    train_paths, val_paths = photo_sets(not args.no_mate)
    start = time.perf_counter()
    data, records = make_shards(train_paths, args.shards or os.path.join(work_dir, "shards"))
    prepare_seconds = time.perf_counter() - start
    names, gts = zip(*validation_gt(val_paths, args.val_crops_per_image), strict=True)
    if args.val_max:
        names, gts = names[: args.val_max], gts[: args.val_max]
    start = time.perf_counter()
    pairs = list(degraded_validation_pairs(gts, config.degradation, seed=args.val_seed, scale=t.scale))
    log(f"{records} training crops, {len(pairs)} validation pairs ({time.perf_counter() - start:.0f} s)")
    baselines = classical_baselines(pairs, t.scale)
    log("baselines " + json.dumps({k: round(v, 3) for k, v in baselines.items()}))

    curve, eval_seconds = [], [0.0]

    def make_evaluate(run, points, niqe=False):
        def evaluate(minutes, step):
            s = time.perf_counter()
            ema = score(run.trainer.ema_generator, pairs, t.scale, niqe)
            raw = score(run.trainer.generator, pairs, t.scale, niqe)
            point = {"minutes": round(minutes, 3), "step": step}
            point.update(psnr_ema=ema["psnr_y"], psnr_g=raw["psnr_y"])
            if niqe:
                point.update(niqe_ema=ema["niqe"], niqe_g=raw["niqe"])
            points.append(point)
            eval_seconds[0] += time.perf_counter() - s
            line = f"  eval {minutes:.2f} min step {step}: "
            line += f"EMA {ema['psnr_y']:.3f} dB, G {raw['psnr_y']:.3f} dB"
            if niqe:
                line += f"; NIQE EMA {ema['niqe']:.3f}, G {raw['niqe']:.3f}"
            log(line)
        return evaluate

    stage1_dir = os.path.join(work_dir, "stage1")
    keras.utils.set_random_seed(t.seed)  # the Keras initialisers: the same weights every run
    run = build_run(config, stage1_dir, resume=False)
    init = reinitialise(run.trainer, args.init, args.init_last_scale, t.seed)
    log(f"init {init}")
    every = args.eval_every_minutes * 60
    timing = train_for(
        run, data, args.minutes * 60, every, make_evaluate(run, curve), log, args.count_first_step
    )
    run.checkpoint.save()
    ema_path = os.path.join(stage1_dir, "ema_generator.weights.h5")
    checkpoints.export_ema_generator(run.trainer, ema_path)
    best_name = max((k for k in baselines if k != "pillow_nearest"), key=baselines.get)
    result = {
        "benchmark": "time_to_quality",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "config": {
            "pipeline": args.pipeline, "overrides": sets, "minutes": args.minutes,
            "eval_every_minutes": args.eval_every_minutes, "init": init, "resolved": pipeline_to_dict(config),
        },
        "images": {
            "train": [os.path.basename(x) for x in train_paths], "validate": list(names),
            "train_crops": records, "mate_backgrounds": any(MATE_DIR in x for x in train_paths),
        },
        "validation": {
            "pairs": len(pairs), "seed": args.val_seed, "gt_side": VAL_SIDE,
            "degradation": "official x4plus second order (degraded_validation_pairs)",
            "metric": "Y-PSNR, BasicSR calculate_psnr, crop_border = scale, SR rounded to uint8",
        },
        "baselines": baselines,
        "baseline_implementations": {
            "pillow_*": f"PIL.Image.resize (Pillow {PIL.__version__}) of the uint8 LQ",
            "matlab_bicubic": "real_esrgan_tf.evaluation.bicubic_upscale (MATLAB imresize, antialias)",
        },
        "curve": curve,
        "steps_per_second": timing["steps_per_second"],
        "steps": timing["steps"],
        "first_step_seconds": timing["first_step_seconds"],
        "first_step_in_budget": args.count_first_step,
        "last_losses": timing["last_metrics"],
        "prepare_seconds": prepare_seconds,
        "best_classical": best_name,
        "gain_ema_over_best_classical_db": curve[-1]["psnr_ema"] - baselines[best_name],
    }

    if args.stage2_minutes > 0:
        before = score(run.trainer.ema_generator, pairs, t.scale, niqe=True)
        config2 = load_pipeline(args.pipeline, sets + stage2_overrides(args, ema_path))
        run2 = build_run(config2, os.path.join(work_dir, "stage2"), resume=False)
        curve2 = []
        every = (args.stage2_eval_every_minutes or args.eval_every_minutes) * 60
        evaluate2 = make_evaluate(run2, curve2, niqe=True)  # stage 2 trades PSNR for NIQE: track both
        budget2 = args.stage2_minutes * 60
        timing2 = train_for(run2, data, budget2, every, evaluate2, log, args.count_first_step)
        last = curve2[-1]  # train_for evaluates at its last step: the models as they end
        after = {"psnr_y": last["psnr_ema"], "niqe": last["niqe_ema"]}
        g_after = {"psnr_y": last["psnr_g"], "niqe": last["niqe_g"]}  # the EMA lags a short stage 2
        from real_esrgan_tf.evaluation import calculate_niqe

        bicubic = [pillow_upscale(lq, gt, "bicubic") for lq, gt in pairs]
        bicubic_niqe = float(np.mean([calculate_niqe(b, t.scale) for b in bicubic]))
        offset = curve[-1]["minutes"]
        result["stage2"] = {
            "minutes": args.stage2_minutes,
            "overrides": stage2_overrides(args, "<stage-1 EMA>"),
            "perceptual": (
                "random VGG19 weights: the perceptual term is meaningless (no pretrained VGG19 offline)"
                if args.stage2_perceptual == "random"
                else "off (perceptual_weight 0: no VGG19 weights offline)"
            ),
            "ema_before": before, "ema_after": after, "g_after": g_after,
            "niqe_pillow_bicubic": bicubic_niqe,
            "curve": [dict(c, minutes=round(offset + c["minutes"], 3)) for c in curve2],
            "steps_per_second": timing2["steps_per_second"], "steps": timing2["steps"],
            "first_step_seconds": timing2["first_step_seconds"],
            "last_losses": timing2["last_metrics"],
        }
    result["eval_seconds"] = eval_seconds[0]
    if args.plot:
        init_label = config.generator.init if args.init == "recipe" else args.init
        what = "stage 1 from scratch"
        if config.init.generator:
            init_label = f"from {os.path.basename(config.init.generator)}"
            what = "stage 1 from a saved generator" if args.minutes else "stage 2 from a saved generator"
        title = (
            f"SRVGGNetCompact x4 {what}, {records} crops, {len(pairs)} val pairs\n"
            f"lr {config.optimizer.g_lr:g}, EMA {t.ema_decay:g}, batch {t.batch_size_per_replica}, "
            f"GT {t.gt_size}, {t.precision}, init {init_label}; "
            f"load avg {load_start[0]:.1f} on {os.cpu_count()} CPUs"
        )
        if "stage2" in result:
            c2 = config2
            title += (
                f"\nstage 2 ({c2.train.stage.value}): G lr {c2.optimizer.g_lr:g}, "
                f"D lr {c2.optimizer.d_lr:g}, "
                f"GAN weight {c2.losses.gan_weight:g}, perceptual {c2.losses.perceptual_weight:g}, "
                f"EMA {c2.train.ema_decay:g}; {result['stage2']['steps']} steps"
            )
        xlabel = "training minutes (CPU wall clock; evaluation{} excluded)".format(
            "" if args.count_first_step else " and the first step's compile"
        )
        plot(args.plot, curve, baselines, title, result.get("stage2"), xlabel)
        result["plot"] = os.path.abspath(args.plot)
    result["work_dir"] = work_dir
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
