"""Seconds per training iteration: Real-ESRGAN stage 2 (RRDBNet 23 blocks + U-Net SN D + VGG19
perceptual) and stage 1 (RRDBNet, L1), batch 2, GT 128, float32 / mixed_bfloat16, with and without
XLA, next to the same step written in PyTorch (the official model code's operations) in this process.

The timed step is the model update (G step, D step, EMA) on a prepared (LQ, GT, GT_usm) batch: the
degradation is benchmarked by the degradation module. Prints ONE JSON line (medians of --repeats).

    python benchmarks/bench_train.py [--repeats 5] [--batch 2] [--gt 128] [--no-torch]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def _median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_tf(stage: int, precision: str, xla: bool, batch: int, gt: int, repeats: int) -> float:
    import keras
    import tensorflow as tf

    from real_esrgan_tf.models import RRDBNet, UNetDiscriminatorSN
    from real_esrgan_tf.training.build import dtype_policy
    from real_esrgan_tf.training.config import Precision
    from real_esrgan_tf.training.losses import PerceptualLoss, PerceptualLossConfig
    from real_esrgan_tf.training.optimizers import TorchAdam
    from real_esrgan_tf.training.trainer import RealESRGANTrainer

    keras.utils.set_random_seed(0)
    with dtype_policy(Precision(precision)):
        g = RRDBNet(scale=4, num_block=23)
        d = UNetDiscriminatorSN(num_feat=64) if stage == 2 else None
        vgg = PerceptualLoss(PerceptualLossConfig(vgg_weights="random")) if stage == 2 else None
    trainer = RealESRGANTrainer(g, d, vgg, ema_decay=0.999)
    adam = lambda lr: TorchAdam(lr, beta_1=0.9, beta_2=0.99)  # noqa: E731  (what make_optimizer builds)
    trainer.compile(adam(1e-4 if stage == 2 else 2e-4), adam(1e-4) if stage == 2 else None)
    trainer.build_state((batch, gt // 4, gt // 4, 3), (batch, gt, gt, 3))
    lq = tf.random.uniform((batch, gt // 4, gt // 4, 3))
    hq = tf.random.uniform((batch, gt, gt, 3))
    step = tf.function(trainer.optimize, jit_compile=xla)
    return _median_seconds(lambda: [float(v) for v in step(lq, hq, hq).values()], repeats)


def bench_torch(stage: int, batch: int, gt: int, repeats: int) -> float:
    """The official step's operations (BasicSR RealESRGANModel.optimize_parameters), float32, on the
    official architectures of tests/torch_oracles.py."""
    import copy

    import torch
    from torch import nn
    from torch.nn import functional as F

    from tests import torch_oracles as oracles

    torch.manual_seed(0)

    class VGG(nn.Module):
        """BasicSR VGGFeatureExtractor: input norm, pre-ReLU features, truncated after conv5_4."""

        wanted = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}

        def __init__(self):
            super().__init__()
            self.features = oracles.vgg19_features()

        def forward(self, x):
            x = oracles.imagenet_normalize(x)
            return oracles.vgg19_pre_relu_features(self.features, x, last="conv5_4")

    net_g = oracles.StateDictNet(oracles.rrdbnet_state(4, 64, 23, 32, seed=0), oracles.rrdbnet, scale=4,
                                 num_block=23)
    net_g_ema = copy.deepcopy(net_g).eval()
    opt_g = torch.optim.Adam(net_g.parameters(), 1e-4, betas=(0.9, 0.99))
    net_d = oracles.UNetDiscriminatorSN(64) if stage == 2 else None
    opt_d = torch.optim.Adam(net_d.parameters(), 1e-4, betas=(0.9, 0.99)) if stage == 2 else None
    vgg = VGG().eval() if stage == 2 else None
    if vgg is not None:
        for p in vgg.parameters():
            p.requires_grad = False
    lq, hq = torch.rand(batch, 3, gt // 4, gt // 4), torch.rand(batch, 3, gt, gt)
    bce = nn.BCEWithLogitsLoss()

    def step():
        if net_d is not None:
            for p in net_d.parameters():
                p.requires_grad = False
        opt_g.zero_grad()
        out = net_g(lq)
        loss = F.l1_loss(out, hq)
        if net_d is not None:
            f_out, f_gt = vgg(out), vgg(hq.detach())
            loss = loss + sum(w * F.l1_loss(f_out[k], f_gt[k]) for k, w in VGG.wanted.items())
            loss = loss + 0.1 * bce(net_d(out), torch.ones(batch, 1, gt, gt))
        loss.backward()
        opt_g.step()
        if net_d is not None:
            for p in net_d.parameters():
                p.requires_grad = True
            opt_d.zero_grad()
            bce(net_d(hq), torch.ones(batch, 1, gt, gt)).backward()
            bce(net_d(out.detach().clone()), torch.zeros(batch, 1, gt, gt)).backward()
            opt_d.step()
        with torch.no_grad():
            for pe, p in zip(net_g_ema.parameters(), net_g.parameters(), strict=True):
                pe.mul_(0.999).add_(p, alpha=0.001)

    return _median_seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gt", type=int, default=128)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    args = parser.parse_args()

    result = {
        "benchmark": "train_step_seconds_per_iteration",
        "date": datetime.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "batch": args.batch,
        "gt_size": args.gt,
        "repeats": args.repeats,
        "target_stage2_float32_seconds": 1.9,
    }
    tf_times = {}
    for stage in (2, 1):
        for precision in args.precisions.split(","):
            for xla in (True, False):
                key = f"stage{stage}_{precision}_{'xla' if xla else 'graph'}"
                tf_times[key] = round(bench_tf(stage, precision, xla, args.batch, args.gt, args.repeats), 4)
    result["tensorflow"] = tf_times
    if not args.no_torch:
        result["torch_reference"] = {
            f"stage{stage}_float32": round(bench_torch(stage, args.batch, args.gt, args.repeats), 4)
            for stage in (2, 1)
        }
        fastest = min(v for k, v in tf_times.items() if k.startswith("stage2_float32"))
        result["stage2_float32_speedup_vs_torch"] = round(
            result["torch_reference"]["stage2_float32"] / fastest, 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
