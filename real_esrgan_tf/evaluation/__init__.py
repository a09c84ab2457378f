"""Evaluation: BasicSR-exact PSNR/SSIM/NIQE, MATLAB bicubic, scoring an upscaler on (LQ, GT) pairs,
and a deterministic degraded validation set.

`niqe_pris_params.npz` (NIQE's pristine model) comes from BasicSR 1.4.2 (Apache-2.0), converted
there from the NIQE authors' MATLAB release. The validation-set helpers need TensorFlow and are
imported on first use.
"""

from real_esrgan_tf.evaluation.evaluate import (
    EvaluationResult,
    ImagePair,
    ImageScores,
    PairPaths,
    Upscaling,
    evaluate,
    iter_folder_pairs,
    iter_lq_folder,
    iter_shard_pairs,
    load_pair,
    match_gt,
    pair_folders,
    read_rgb,
    score_pair,
)
from real_esrgan_tf.evaluation.matlab_resize import bicubic_upscale, imresize
from real_esrgan_tf.evaluation.metrics import EvaluationError, calculate_psnr, calculate_ssim, rgb_to_y
from real_esrgan_tf.evaluation.niqe import calculate_niqe

_LAZY = {
    "degraded_validation_pairs": "real_esrgan_tf.evaluation.validation_set",
    "degrade_one": "real_esrgan_tf.evaluation.validation_set",
    "image_seed": "real_esrgan_tf.evaluation.validation_set",
    "write_validation_set": "real_esrgan_tf.evaluation.validation_set",
}

__all__ = [
    "EvaluationError",
    "EvaluationResult",
    "ImagePair",
    "ImageScores",
    "PairPaths",
    "Upscaling",
    "bicubic_upscale",
    "calculate_niqe",
    "calculate_psnr",
    "calculate_ssim",
    "evaluate",
    "imresize",
    "iter_folder_pairs",
    "iter_lq_folder",
    "iter_shard_pairs",
    "load_pair",
    "match_gt",
    "pair_folders",
    "read_rgb",
    "rgb_to_y",
    "score_pair",
    *sorted(_LAZY),
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'real_esrgan_tf.evaluation' has no attribute {name!r}")
